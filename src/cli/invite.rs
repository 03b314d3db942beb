//! `peloton admin race invite`: what each racer needs to be tracked, as one message per
//! racer: their personal link to the racer page (`/ride#token=…`, a racer token minted by the
//! server for their race and bib) and, when their tracking app's device id is bound, the
//! settings for Traccar Client, OsmAnd and OwnTracks. Printed for the organiser, and with
//! `--send` mailed to every racer with an address through the mail domain (one job per racer,
//! idempotent: running it again sends nobody a second mail).

use super::output;
use super::CliError;
use crate::net::client::Client;
use crate::net::protocol::{
    DeviceView, MailEnvelope, MailMessageView, RaceView, RacerView, Reply, Request,
};
use crate::time::{format_rfc3339, now_ms};
use serde::Serialize;

/// One racer's invitation.
#[derive(Debug, Clone, Serialize)]
pub struct Invitation {
    /// The racer's bib.
    pub bib: u32,
    /// Their name.
    pub name: String,
    /// Where the mail goes, if the racer gave an address.
    pub email: Option<String>,
    /// The racer page with their token.
    pub ride_url: String,
    /// Their tracking app's device id, if bound.
    pub device_id: Option<String>,
    /// The mail's subject.
    pub subject: String,
    /// The mail's text.
    pub body: String,
}

/// Everything the invitation text reads.
struct Details<'a> {
    /// The race.
    race: &'a RaceView,
    /// The racer.
    racer: &'a RacerView,
    /// `http(s)://host:port` of the server.
    origin: &'a str,
    /// The racer token.
    token: &'a str,
    /// When the token expires.
    expires_at_ms: i64,
    /// The bound device id, if any.
    device_id: Option<&'a str>,
}

/// The invitation's subject and text.
fn compose(d: &Details<'_>) -> (String, String, String) {
    let ride_url = format!("{}/ride#token={}", d.origin, d.token);
    let subject = format!("{}: your start, bib {}", d.race.name, d.racer.bib);
    let mut body = format!(
        "Hello {name},\n\nyou ride {race} with bib {bib}; the start is at {start} (UTC).\n\n\
         Your phone's browser can track your ride, no app needed: open this link on the day,\n\
         press Start and keep the page open while you ride.\n\n  {ride_url}\n\n\
         The link is yours alone; it works until {expires} (UTC).\n",
        name = d.racer.name,
        race = d.race.name,
        bib = d.racer.bib,
        start = format_rfc3339(d.race.start_at_ms),
        expires = format_rfc3339(d.expires_at_ms),
    );
    if let Some(id) = d.device_id {
        body.push_str(&format!(
            "\nOr track it with an app you already use, with these settings:\n\
             - Traccar Client: server URL {origin}, device identifier {id}\n\
             - OsmAnd (online tracking): web address\n  \
             {origin}/osmand?id={id}&lat={{0}}&lon={{1}}&timestamp={{2}}&hdop={{3}}&altitude={{4}}&speed={{5}}&bearing={{6}}\n\
             - OwnTracks: mode HTTP, URL {origin}/owntracks, device ID {id}\n\
             Keep the device id to yourself: it is how the server knows the fixes are yours.\n",
            origin = d.origin,
        ));
    }
    (subject, body, ride_url)
}

/// Builds every invitation of race `race_id` (or one bib's), and with `send` mails them.
pub async fn run(
    client: &mut Client,
    origin: &str,
    race_id: String,
    bib: Option<u32>,
    ttl_secs: u64,
    send: bool,
) -> Result<Vec<Invitation>, CliError> {
    let reply = client
        .request(Request::RaceGet {
            id: race_id.clone(),
        })
        .await?;
    let Reply::Race(race) = reply else {
        return Err(CliError::unexpected(&reply));
    };
    let reply = client
        .request(Request::RacerList {
            race_id: race_id.clone(),
        })
        .await?;
    let Reply::Racers(racers) = reply else {
        return Err(CliError::unexpected(&reply));
    };
    let reply = client
        .request(Request::RaceDevices {
            race_id: race_id.clone(),
        })
        .await?;
    let Reply::Devices { devices, .. } = reply else {
        return Err(CliError::unexpected(&reply));
    };
    let chosen: Vec<&RacerView> = racers
        .iter()
        .filter(|r| bib.is_none_or(|b| b == r.bib))
        .collect();
    if chosen.is_empty() {
        return Err(CliError::Failed(match bib {
            Some(b) => format!("bib {b} is not registered in race {race_id}"),
            None => format!("race {race_id} has no racers to invite"),
        }));
    }
    let mut invitations = Vec::with_capacity(chosen.len());
    for racer in chosen {
        let reply = client
            .request(Request::RacerLink {
                race_id: race_id.clone(),
                bib: racer.bib,
                ttl_secs,
            })
            .await?;
        let Reply::Shared {
            token,
            expires_at_ms,
            ..
        } = reply
        else {
            return Err(CliError::unexpected(&reply));
        };
        let device_id = devices
            .iter()
            .find(|d: &&DeviceView| d.bib == racer.bib)
            .map(|d| d.device_id.as_str());
        let (subject, body, ride_url) = compose(&Details {
            race: &race,
            racer,
            origin,
            token: &token,
            expires_at_ms,
            device_id,
        });
        invitations.push(Invitation {
            bib: racer.bib,
            name: racer.name.clone(),
            email: racer.email.clone(),
            ride_url,
            device_id: device_id.map(str::to_owned),
            subject,
            body,
        });
    }
    if send {
        mail(client, &race_id, &invitations).await?;
    }
    Ok(invitations)
}

/// Submits one mail per racer with an address: correlation `invite.<race>`, sequence the
/// bib, so a second run is recognised by the mail domain and sends nothing again.
async fn mail(
    client: &mut Client,
    race_id: &str,
    invitations: &[Invitation],
) -> Result<(), CliError> {
    for invitation in invitations {
        let Some(to) = &invitation.email else {
            continue;
        };
        let envelope = MailEnvelope {
            correlation_id: format!("invite.{race_id}"),
            sequence: u64::from(invitation.bib),
            sent_at_ms: now_ms(),
            messages: vec![MailMessageView {
                to: to.clone(),
                subject: invitation.subject.clone(),
                body: invitation.body.clone(),
                contact: None,
            }],
        };
        client.request(Request::MailSubmit(envelope)).await?;
    }
    Ok(())
}

/// Prints the invitations: a table of links and ids for people, or the JSON array.
pub fn print(invitations: &[Invitation], json: bool) -> Result<(), CliError> {
    if json {
        return output::json(&invitations);
    }
    for i in invitations {
        println!(
            "bib {} {}: {}{}",
            i.bib,
            i.name,
            i.ride_url,
            i.device_id
                .as_deref()
                .map(|id| format!("  device id {id}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::protocol::RaceStateView;

    fn race() -> RaceView {
        RaceView {
            id: "r1".into(),
            name: "Celje loop".into(),
            state: RaceStateView::Scheduled,
            start_at_ms: 1_796_115_600_000,
            cutoff_at_ms: None,
            created_at_ms: 0,
            started_at_ms: None,
            finished_at_ms: None,
            cancelled_at_ms: None,
            cancel_reason: None,
            course_points: 2,
            course_length_m: 1000.0,
        }
    }

    #[test]
    fn the_text_has_the_link_and_only_a_bound_racer_gets_app_settings() {
        let race = race();
        let racer = RacerView {
            bib: 7,
            name: "Ana".into(),
            team: None,
            email: None,
        };
        let details = |device_id| Details {
            race: &race,
            racer: &racer,
            origin: "https://track.example.org",
            token: "tok",
            expires_at_ms: 1_796_200_000_000,
            device_id,
        };
        let (subject, body, url) = compose(&details(None));
        assert_eq!(url, "https://track.example.org/ride#token=tok");
        assert!(subject.contains("bib 7") && subject.contains("Celje loop"));
        assert!(body.contains(&url) && body.contains("Hello Ana"));
        assert!(!body.contains("Traccar"));
        let (_, body, _) = compose(&details(Some("k3vq7p2mxa9d4wtb")));
        assert!(body
            .contains("server URL https://track.example.org, device identifier k3vq7p2mxa9d4wtb"));
        assert!(body.contains("https://track.example.org/osmand?id=k3vq7p2mxa9d4wtb&lat={0}"));
        assert!(
            body.contains("URL https://track.example.org/owntracks, device ID k3vq7p2mxa9d4wtb")
        );
    }
}
