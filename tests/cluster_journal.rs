//! The journal's contract (`persist::backend`) held by both backends, sled and NATS
//! JetStream, against a real `nats-server`; and what only the replicated one promises:
//! a second writer of one journal is refused (fencing), acknowledged appends survive a
//! `kill -9` of the NATS server, and a three-node cluster keeps acknowledging with one node
//! gone, every acknowledged event readable from the others.

mod common;

use common::nats::{cluster_config, NatsServer};
use peloton::cluster::{Link, LinkRuntime};
use peloton::persist::jetstream::JetStreamJournal;
use peloton::persist::{
    ActorKey, Compaction, Journal, JournalOwner, JournalWriter, PersistError, Store,
};

/// A JetStream journal over a link of its own.
fn start(config: &peloton::config::ClusterConfig) -> (Journal, (JournalOwner, LinkRuntime)) {
    let (link, runtime) = Link::connect(config).unwrap();
    let (journal, writer) = JetStreamJournal::start(&link, None).unwrap();
    (journal, (JournalOwner::JetStream(writer), runtime))
}

/// A journal on sled in a temporary folder.
fn sled_journal() -> (Journal, JournalOwner, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (journal, writer) = JournalWriter::start(store, 16).unwrap();
    (journal, JournalOwner::Sled(writer), dir)
}

/// A journal on JetStream at `urls`, under `prefix` (a fresh one unless given).
fn jetstream_journal(
    urls: &str,
    replicas: u64,
    prefix: Option<&str>,
) -> (Journal, (JournalOwner, LinkRuntime)) {
    let mut config = cluster_config(urls, replicas);
    if let Some(prefix) = prefix {
        config.prefix = prefix.to_owned();
    }
    start(&config)
}

/// The contract every backend keeps, on `journal`.
async fn contract(journal: &Journal) {
    let racer = ActorKey::new("racer", "r1.7");
    let other = ActorKey::new("racer", "r2.1");
    let race = ActorKey::new("race", "r1");
    // Appends are read back one entry per event, in order, however they were grouped.
    journal.append(&racer, 1, &["a", "b", "c"]).await.unwrap();
    journal.append(&racer, 4, &["d"]).await.unwrap();
    journal.append(&other, 1, &["x"]).await.unwrap();
    journal.append(&race, 1, &["created"]).await.unwrap();
    let history: Vec<(u64, String)> = journal.history(&racer).unwrap();
    assert_eq!(
        history,
        vec![
            (1, "a".into()),
            (2, "b".into()),
            (3, "c".into()),
            (4, "d".into())
        ]
    );
    assert_eq!(journal.last_seq(&racer).unwrap(), 4);
    assert_eq!(
        journal.last_seq(&ActorKey::new("racer", "nobody")).unwrap(),
        0
    );
    let page: Vec<(u64, String)> = journal.page_before(&racer, Some(4), 2).unwrap();
    assert_eq!(
        page,
        vec![(3, "c".into()), (2, "b".into())],
        "newest first, below 4"
    );
    // Actors by kind and id prefix, in key order.
    assert_eq!(
        journal.actors("racer").unwrap(),
        vec![racer.clone(), other.clone()]
    );
    assert_eq!(
        journal.actors_under("racer", "r2.").unwrap(),
        vec![other.clone()]
    );
    assert_eq!(journal.actors("race").unwrap(), vec![race.clone()]);
    assert!(journal.actors("mail").unwrap().is_empty());

    // A snapshot that keeps its events: recovery is the snapshot plus what follows; the
    // history is still whole.
    journal
        .snapshot(&racer, 4, &"state at 4".to_owned(), Compaction::Keep)
        .await
        .unwrap();
    journal.flush().await.unwrap();
    journal.append(&racer, 5, &["e", "f"]).await.unwrap();
    wait_for_snapshot(journal, &racer, 4).await;
    let recovered = journal.load::<String, String>(&racer).unwrap();
    assert_eq!(recovered.snapshot, Some((4, "state at 4".to_owned())));
    assert_eq!(recovered.events, vec![(5, "e".into()), (6, "f".into())]);
    assert_eq!(recovered.last_seq, 6);
    assert_eq!(journal.history::<String>(&racer).unwrap().len(), 6);

    // A snapshot that deletes what it covers: recovery still sees everything after it.
    journal
        .snapshot(&race, 1, &"race at 1".to_owned(), Compaction::Delete)
        .await
        .unwrap();
    journal.flush().await.unwrap();
    wait_for_snapshot(journal, &race, 1).await;
    // Listed by its snapshot alone once the records it covers are gone.
    journal.flush().await.unwrap();
    assert_eq!(journal.actors("race").unwrap(), vec![race.clone()]);
    journal.append(&race, 2, &["started"]).await.unwrap();
    let recovered = journal.load::<String, String>(&race).unwrap();
    assert_eq!(recovered.snapshot, Some((1, "race at 1".to_owned())));
    assert_eq!(recovered.events, vec![(2, "started".into())]);
    let kept: Vec<(u64, String)> = journal.history(&race).unwrap();
    assert_eq!(
        kept,
        vec![(2, "started".into())],
        "what the snapshot covered is gone"
    );
    assert_eq!(journal.last_seq(&race).unwrap(), 2);
    assert_eq!(journal.actors("race").unwrap(), vec![race.clone()]);

    // Appends queued without waiting (as conversations are) keep their order, and a flush
    // answers once they are all durable.
    let dm = ActorKey::new("dm", "a~b");
    let mut queued = Vec::new();
    for seq in 1..=50u64 {
        queued.push(journal.enqueue(&dm, seq, &[seq]).await.unwrap());
    }
    journal.flush().await.unwrap();
    for durable in queued {
        durable.wait().await.unwrap();
    }
    let messages: Vec<(u64, u64)> = journal.history(&dm).unwrap();
    assert_eq!(messages, (1..=50).map(|s| (s, s)).collect::<Vec<_>>());
}

/// Snapshots are queued, not awaited: waits until `actor`'s covers `seq`.
async fn wait_for_snapshot(journal: &Journal, actor: &ActorKey, seq: u64) {
    for _ in 0..200 {
        if let Ok(recovered) = journal.load::<String, String>(actor) {
            if recovered
                .snapshot
                .as_ref()
                .is_some_and(|(at, _)| *at >= seq)
            {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("snapshot of {actor} at {seq} never stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_keeps_the_journal_contract() {
    let (journal, _writer, _dir) = sled_journal();
    contract(&journal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_keeps_the_journal_contract() {
    let nats = NatsServer::start();
    let (journal, _writer) = jetstream_journal(&nats.url, 1, None);
    contract(&journal).await;
}

/// Two nodes writing one journal: the one whose idea of the journal is stale is refused,
/// and nothing it sent is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_of_one_journal_is_fenced() {
    let nats = NatsServer::start();
    let prefix = format!("fence{}", common::free_port());
    let (a, _wa) = jetstream_journal(&nats.url, 1, Some(&prefix));
    let (b, _wb) = jetstream_journal(&nats.url, 1, Some(&prefix));
    let race = ActorKey::new("race", "r1");
    a.append(&race, 1, &["a1", "a2"]).await.unwrap();
    // B takes over: it reads the journal, then appends after it.
    assert_eq!(b.last_seq(&race).unwrap(), 2);
    b.append(&race, 3, &["b3"]).await.unwrap();
    // A still believes its own record is the newest: refused.
    let stale = a.append(&race, 3, &["a3"]).await.unwrap_err();
    assert!(matches!(stale, PersistError::Fenced { .. }), "{stale:?}");
    // B appending over what it already has is refused too.
    let overlap = b.append(&race, 2, &["again"]).await.unwrap_err();
    assert!(
        matches!(overlap, PersistError::Fenced { .. }),
        "{overlap:?}"
    );
    let history: Vec<(u64, String)> = b.history(&race).unwrap();
    assert_eq!(
        history,
        vec![(1, "a1".into()), (2, "a2".into()), (3, "b3".into())],
        "only the fenced-in writer's events"
    );
    // A recovers by reading the journal, and may then append after it.
    assert_eq!(a.last_seq(&race).unwrap(), 3);
    a.append(&race, 4, &["a4"]).await.unwrap();
    assert_eq!(b.history::<String>(&race).unwrap().len(), 4);
}

/// Every acknowledged append is there after the NATS server is killed with `kill -9` and
/// started again on its store; appends while it is down are refused, not acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_kill9_of_the_nats_server() {
    let mut nats = NatsServer::start();
    let mut config = cluster_config(&nats.url, 1);
    config.ack_timeout_ms = 1000;
    let (journal, _writer) = start(&config);
    let actor = ActorKey::new("racer", "r9.1");
    for seq in 1..=200u64 {
        journal.append(&actor, seq, &[seq]).await.unwrap();
    }
    nats.kill9();
    let refused = journal.append(&actor, 201, &[201u64]).await;
    assert!(
        refused.is_err(),
        "an append with NATS down is not acknowledged"
    );
    nats.restart();
    let (reader, _w) = start(&config);
    let events: Vec<(u64, u64)> = reader.history(&actor).unwrap();
    assert!(
        events.len() >= 200,
        "{} of 200 acknowledged events",
        events.len()
    );
    assert_eq!(
        events[..200],
        (1..=200).map(|s| (s, s)).collect::<Vec<_>>()[..]
    );
}

/// Three NATS servers, three replicas: with one node killed the others still acknowledge
/// (a majority stored the record), and every acknowledged event is read back through a
/// surviving node, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_journal_keeps_acknowledging_with_one_node_gone() {
    let mut nodes = NatsServer::cluster(3);
    let urls = nodes
        .iter()
        .map(|n| n.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let prefix = format!("r3x{}", common::free_port());
    let (journal, _writer) = jetstream_journal(&urls, 3, Some(&prefix));
    let actor = ActorKey::new("race", "big");
    for seq in 1..=50u64 {
        journal.append(&actor, seq, &[seq]).await.unwrap();
    }
    nodes[2].kill9();
    let mut retried = Vec::new();
    for seq in 51..=100u64 {
        // A publish caught by the node going away (our connection may have been to it) is
        // refused, not acknowledged; the client sends it again, as on `unavailable`.
        let mut attempt = 0;
        while let Err(e) = journal.append(&actor, seq, &[seq]).await {
            attempt += 1;
            retried.push(format!("{seq}: {e}"));
            assert!(
                attempt < 10,
                "never acknowledged with two of three nodes: {retried:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    assert!(
        retried.len() <= 3,
        "a few refusals while the client moved: {retried:?}"
    );
    let acked = 100u64;
    let survivors = format!("{},{}", nodes[0].url, nodes[1].url);
    let (reader, _w) = jetstream_journal(&survivors, 3, Some(&prefix));
    let events: Vec<(u64, u64)> = reader.history(&actor).unwrap();
    assert_eq!(
        events[..acked as usize],
        (1..=acked).map(|s| (s, s)).collect::<Vec<_>>()[..]
    );
}

/// A journal whose guard refuses (a node that lost a race's lease) writes nothing: the
/// append is fenced before it reaches NATS, and other actors' appends go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_journal_writes_nothing_it_may_not() {
    let nats = NatsServer::start();
    let config = cluster_config(&nats.url, 1);
    let (link, _runtime) = Link::connect(&config).unwrap();
    let refused = ActorKey::new("race", "lost");
    let guard: peloton::persist::jetstream::WriteGuard = std::sync::Arc::new({
        let refused = refused.clone();
        move |actor| match actor == &refused {
            true => Err("this node does not hold lease race.lost".into()),
            false => Ok(()),
        }
    });
    let (journal, _writer) = JetStreamJournal::start(&link, Some(guard)).unwrap();
    let error = journal.append(&refused, 1, &["x"]).await.unwrap_err();
    assert!(matches!(error, PersistError::Fenced { .. }), "{error:?}");
    let allowed = ActorKey::new("race", "kept");
    journal.append(&allowed, 1, &["y"]).await.unwrap();
    let (reader, _w) = start(&config);
    assert_eq!(
        reader.last_seq(&refused).unwrap(),
        0,
        "nothing of the refused actor"
    );
    assert_eq!(reader.history::<String>(&allowed).unwrap().len(), 1);
}

/// An append larger than the NATS servers take in one message (`max_payload`, 1 MiB by
/// default) is refused before anything is sent, as `TooLarge` with its size and the
/// limit; the connection stays up and the actor's journal goes on after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_over_max_payload_is_refused_and_the_journal_goes_on() {
    let nats = NatsServer::start();
    let (journal, _writer) = jetstream_journal(&nats.url, 1, None);
    let race = ActorKey::new("race", "big");
    journal.append(&race, 1, &["small"]).await.unwrap();
    let huge = "x".repeat(2 << 20);
    let refused = journal.append(&race, 2, &[huge]).await.unwrap_err();
    let PersistError::TooLarge { bytes, limit, .. } = refused else {
        panic!("{refused:?}")
    };
    assert!(bytes > 2 << 20 && limit < 1 << 20, "{bytes} over {limit}");
    journal.append(&race, 2, &["after"]).await.unwrap();
    let history: Vec<(u64, String)> = journal.history(&race).unwrap();
    assert_eq!(history, vec![(1, "small".into()), (2, "after".into())]);
}
