//! Patrol: on-duty officers, citizens near them, connections, reward points, vouchers,
//! donations and direct messages.
//!
//! Pure rules (no tokio, no sled):
//! - [`proximity`]: the H3 proximity index, read directly by every session (no actor hop).
//! - [`directory`]: officer accounts, retailer offers and charities; bulk-import validation.
//! - [`voucher`]: voucher codes anyone holding the key can verify offline.
//! - [`ledger`]: the event-sourced rewards ledger (awards, redemptions, donations).
pub mod directory;
pub mod ledger;
pub mod proximity;
pub mod voucher;
