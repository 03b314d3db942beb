//! The patrol part of protocol v1: the fields of patrol requests, replies and pushes.
//!
//! These are wire twins of the patrol domain's types, kept apart on purpose so either can
//! change without the other; [`crate::api`] maps between them. PROTOCOL.md §17 documents
//! every field.

use serde::{Deserialize, Serialize};

/// An on-duty officer as a citizen sees it: never the exact position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfficerNearbyView {
    /// The officer's id.
    pub officer_id: String,
    /// The name officers are imported with.
    pub display_name: String,
    /// Latitude × 1e7 of the centre of the officer's H3 cell at `patrol.privacy_resolution`.
    pub lat_e7: i32,
    /// Longitude × 1e7 of that centre.
    pub lon_e7: i32,
    /// Distance from the citizen, metres, rounded to `patrol.distance_step_m`.
    pub distance_m: u32,
    /// Direction from the citizen, degrees clockwise from north, rounded to 45.
    pub bearing_deg: u16,
}

/// A connection: an accepted connect request between two people who met in person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionView {
    /// The connect request's id, which names the connection.
    pub connection_id: String,
    /// The officer.
    pub officer_id: String,
    /// The citizen.
    pub citizen_id: String,
    /// The other side's display name, as the receiver knows them.
    pub with_name: String,
    /// Points this connection earned the receiver (0 when the pair was already rewarded
    /// today or the daily cap was reached).
    pub points: u64,
    /// When it was made, ms since the epoch (server clock).
    pub at_ms: i64,
}

/// One direct message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectMessageView {
    /// Sender (set by the server from the token).
    pub from: String,
    /// Recipient.
    pub to: String,
    /// Position in the two users' conversation, from 1; a client that already has it ignores
    /// a second delivery.
    pub seq: u64,
    /// When the server accepted it, ms since the epoch (server clock; clients never set it).
    pub at_ms: i64,
    /// The text.
    pub text: String,
}

/// One line of a user's rewards history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardEntryView {
    /// Position in the user's history, from 0; pass as `before` to page back.
    pub index: u64,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Points added (positive) or spent (negative).
    pub delta: i64,
    /// `connection`, `redemption` or `donation`.
    pub cause: String,
    /// The connection id or the request id.
    pub reference: String,
    /// The other user, the offer id or the charity id.
    pub detail: String,
}

/// An officer account row of an import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfficerRow {
    /// Officer id (the subject of the officer's tokens).
    pub id: String,
    /// Name citizens see.
    pub display_name: String,
    /// Precinct id, for reports.
    pub precinct: String,
    /// Where the officer's mails go.
    pub email: Option<String>,
}

/// A retailer offer row of an import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferRow {
    /// Offer id.
    pub id: String,
    /// Who honours the voucher.
    pub retailer: String,
    /// What the voucher is for.
    pub title: String,
    /// Cost in points.
    pub points: u64,
}

/// A charity row of an import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CharityRow {
    /// Charity id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// Rows of one import request: all valid or the request is refused as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportBatch {
    /// Officer accounts.
    Officers(Vec<OfficerRow>),
    /// Retailer offers.
    Offers(Vec<OfferRow>),
    /// Charities.
    Charities(Vec<CharityRow>),
}

/// One row of the patrol report: one precinct on one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRowView {
    /// The day as `YYYY-MM-DD` (UTC).
    pub date: String,
    /// The precinct (`none` for points spent by users who never connected).
    pub precinct: String,
    /// Connections made.
    pub connections: u64,
    /// Points awarded (both sides).
    pub points_awarded: u64,
    /// Points redeemed for vouchers.
    pub points_redeemed: u64,
    /// Points donated.
    pub points_donated: u64,
}
