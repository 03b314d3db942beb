//! Patrol helpers shared by the tests that drive officers and citizens over real sockets.

use peloton::geo::Position;
use peloton::net::client::{Client, ClientError};
use peloton::net::protocol::{
    CharityRow, ImportBatch, OfferRow, OfficerRow, Reply, Request, RewardEntryView,
};

/// An officer account row in precinct `precinct`, named after its id.
pub fn officer_row(id: &str, precinct: &str, email: Option<&str>) -> OfficerRow {
    OfficerRow {
        id: id.into(),
        display_name: format!("Officer {id}"),
        precinct: precinct.into(),
        email: email.map(Into::into),
    }
}

/// Sends the device's position.
pub async fn at(client: &mut Client, p: Position) -> Reply {
    client
        .request(Request::PatrolPosition {
            lat_e7: p.lat_e7,
            lon_e7: p.lon_e7,
            accuracy_m: Some(5.0),
        })
        .await
        .expect("position accepted")
}

/// A citizen asks `officer_id` to connect; returns the request id.
pub async fn ask(citizen: &mut Client, officer_id: &str) -> String {
    match citizen
        .request(Request::ConnectRequest {
            officer_id: officer_id.into(),
        })
        .await
    {
        Ok(Reply::ConnectPending { request_id, .. }) => request_id,
        other => panic!("connect request not pending: {other:?}"),
    }
}

/// An officer answers a connect request.
pub async fn answer(
    officer: &mut Client,
    request_id: &str,
    accept: bool,
) -> Result<Reply, ClientError> {
    officer
        .request(Request::ConnectAnswer {
            request_id: request_id.into(),
            accept,
        })
        .await
}

/// Imports `officers`, one offer (`coffee`, 5 points) and one charity (`food-bank`).
pub async fn import_basics(admin: &mut Client, officers: Vec<OfficerRow>) {
    let batches = [
        ImportBatch::Officers(officers),
        ImportBatch::Offers(vec![OfferRow {
            id: "coffee".into(),
            retailer: "Cafe Nord".into(),
            title: "A coffee".into(),
            points: 5,
        }]),
        ImportBatch::Charities(vec![CharityRow {
            id: "food-bank".into(),
            name: "Food Bank".into(),
        }]),
    ];
    for batch in batches {
        admin
            .request(Request::PatrolImport(batch))
            .await
            .expect("import accepted");
    }
}

/// The newest page (10 entries) of the user's rewards history.
pub async fn history(client: &mut Client) -> Vec<RewardEntryView> {
    match client
        .request(Request::RewardsHistory {
            before: None,
            limit: 10,
        })
        .await
    {
        Ok(Reply::RewardsHistory(entries)) => entries,
        other => panic!("no history: {other:?}"),
    }
}
