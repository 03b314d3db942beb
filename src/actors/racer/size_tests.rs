//! Bytes per fix on the wire and in the journal: where the racer's rules meet the codec and
//! the storage encoding, so the guard lives with the shell that uses both.

use super::state::{Fix, RacerEvent};
use crate::geo::Position;
use peloton_protocol::codec::Codec;
use peloton_protocol::protocol::{ClientFrame, Request, WireFix};

/// Bytes per fix on the wire and in the journal stay small: a regression guard for the
/// figures quoted in BENCHMARKS.md.
#[test]
fn a_fix_is_compact_on_the_wire_and_in_the_journal() {
    let wire = WireFix {
        at_ms: 1_796_115_600_000,
        lat_e7: 462_309_000,
        lon_e7: 152_604_000,
        accuracy_dm: 50,
        speed_cmps: Some(830),
        elevation_dm: Some(2410),
    };
    let one = Codec::Binary
        .encode_client_bytes(&ClientFrame {
            id: 1000,
            request: Request::Fixes { fixes: vec![wire] },
        })
        .unwrap();
    let sixty = Codec::Binary
        .encode_client_bytes(&ClientFrame {
            id: 1000,
            request: Request::Fixes {
                fixes: vec![wire; 60],
            },
        })
        .unwrap();
    let per_fix_in_batch = (sixty.len() - one.len()) as f64 / 59.0;
    let fix = Fix {
        at_ms: wire.at_ms,
        position: Position {
            lat_e7: wire.lat_e7,
            lon_e7: wire.lon_e7,
        },
        accuracy_m: 5.0,
        speed_mps: Some(8.3),
        elevation_m: Some(241.0),
    };
    let stored = crate::persist::record::encode(&RacerEvent::FixAccepted {
        fix,
        progress_m: 12_345.6,
        offset_m: 3.2,
        on_course: true,
    })
    .unwrap();
    println!("wire: {} bytes for a one-fix frame, {per_fix_in_batch:.1} bytes per fix in a batch; journal value: {} bytes", one.len(), stored.len());
    assert!(one.len() <= 36, "{}", one.len());
    assert!(per_fix_in_batch <= 30.0, "{per_fix_in_batch}");
    assert!(stored.len() <= 64, "{}", stored.len());
}
