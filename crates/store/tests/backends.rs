//! The same checks on both backends, through [`Store`]: conversations and member
//! changes, contiguous sequence numbers under concurrent appends, idempotent cids,
//! history pages, watermarks, last-seen times, a gate refusing; a database of schema
//! version 1 migrated at open. PostgreSQL: the server on this machine
//! (`HERALD_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/postgres`), in a
//! database of each test's own, dropped after; without a server the tests fail under CI
//! (`CI=true`) and say they did not run otherwise.

#![allow(clippy::unwrap_used)] // a test: a panic is the failure

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use store::{
    Body, Config, Kind, MemberChange, NewMessage, Role, Store, StoreError, StoreStats, Watermark,
};

fn message(conversation: i64, sender: &str, cid: &str) -> NewMessage {
    NewMessage {
        conversation,
        sender: Some(sender.to_owned()),
        cid: Some(cid.to_owned()),
        body: Body::Json(format!("{{\"cid\":\"{cid}\"}}")),
        ts_ms: 1,
    }
}

async fn ready(s: &Store) {
    for _ in 0..100 {
        if s.is_ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the {} store did not become ready", s.backend());
}

/// Everything both backends must agree on.
async fn battery(s: &Store) {
    ready(s).await;
    // Direct: unique per pair.
    let (ab, created) = s.create_direct("ann", "bob", 5).await.unwrap();
    assert!(created);
    assert_eq!((ab.kind, ab.member_count), (Kind::Direct, 2));
    let (again, created) = s.create_direct("bob", "ann", 6).await.unwrap();
    assert_eq!((again.id, created), (ab.id, false));
    assert!(matches!(
        s.create_direct("ann", "ann", 1).await,
        Err(StoreError::Conflict(_))
    ));

    // Groups: rights, limits, handover.
    let g = s
        .create_group(
            Some("ann"),
            Some("team".into()),
            vec!["bob".into(), "ann".into()],
            7,
        )
        .await
        .unwrap();
    assert_eq!((g.member_count, g.owner.as_deref()), (2, Some("ann")));
    let by = |user: &str| MemberChange {
        by: Some(user.to_owned()),
        max_members: 5,
        ..MemberChange::default()
    };
    let refusals = [
        (
            MemberChange {
                add: vec!["cy".into()],
                ..by("bob")
            },
            "forbidden",
        ),
        (
            MemberChange {
                add: vec!["cy".into()],
                ..by("zed")
            },
            "not found",
        ),
        (
            MemberChange {
                remove: vec!["ann".into()],
                ..by("ann")
            },
            "conflict",
        ),
        (
            MemberChange {
                add: (0..5).map(|i| format!("u{i}")).collect(),
                ..by("ann")
            },
            "limit",
        ),
    ];
    for (change, want) in refusals {
        let got = match s.change_members(g.id, change.clone(), |_| {}).await {
            Err(StoreError::Forbidden(_)) => "forbidden",
            Err(StoreError::NotFound) => "not found",
            Err(StoreError::Conflict(_)) => "conflict",
            Err(StoreError::Limit(_)) => "limit",
            other => panic!("{change:?}: {other:?}"),
        };
        assert_eq!(got, want, "{change:?}");
    }
    // A refused change wrote nothing.
    let members: Vec<String> = s
        .members(g.id, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.user)
        .collect();
    assert_eq!(members, ["ann", "bob"]);
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    let changed = s
        .change_members(
            g.id,
            MemberChange {
                add: vec!["cy".into(), "bob".into()],
                promote: vec!["bob".into()],
                ..by("ann")
            },
            move |c| counted.store(c.added.len(), Ordering::SeqCst),
        )
        .await
        .unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 1, "applied saw the change");
    assert_eq!(changed.roles, [("bob".to_owned(), Role::Admin)]);
    assert_eq!(changed.conversation.member_count, 3);
    let left = s
        .change_members(
            g.id,
            MemberChange {
                leave: true,
                ..by("ann")
            },
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(left.roles, [("bob".to_owned(), Role::Owner)]);
    assert_eq!(left.conversation.owner.as_deref(), Some("bob"));
    let page = s.members(g.id, Some("bob".into()), 1).await.unwrap();
    assert_eq!(
        page.iter().map(|m| m.user.as_str()).collect::<Vec<_>>(),
        ["cy"]
    );

    // Appends: contiguous under concurrency, idempotent on (sender, cid).
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = s.clone();
        let sender = if i % 2 == 0 { "ann" } else { "bob" };
        tasks.push(tokio::spawn(async move {
            s.append(message(ab.id, sender, &format!("c{i}"))).await
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        let stored = t.await.unwrap().unwrap();
        assert!(!stored.duplicate);
        seqs.push(stored.seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    let first = s.messages(ab.id, Some(0), None, 1).await.unwrap().remove(0);
    let (sender, cid) = (first.sender.clone().unwrap(), first.cid.clone().unwrap());
    let retry = s.append(message(ab.id, &sender, &cid)).await.unwrap();
    assert!(retry.duplicate);
    assert_eq!((retry.id, retry.seq), (first.id, 1));
    let elsewhere = s.append(message(g.id, &sender, &cid)).await;
    assert_eq!(
        elsewhere,
        Err(StoreError::CidTaken {
            conversation: ab.id
        })
    );
    assert_eq!(
        s.append(message(999_999, "ann", "nowhere")).await,
        Err(StoreError::NotFound)
    );
    // A gate that refuses stores nothing.
    let gated = s
        .append_if(message(ab.id, "ann", "gated"), || Err(StoreError::NotFound))
        .await;
    assert_eq!(gated, Err(StoreError::NotFound));
    let bin = s
        .append(NewMessage {
            body: Body::Binary(vec![0, 255]),
            ..message(ab.id, "ann", "bin")
        })
        .await
        .unwrap();
    assert_eq!(bin.seq, 201, "no refusal took a seq");

    // History: the newest page, a range.
    let last = s.messages(ab.id, None, None, 3).await.unwrap();
    assert_eq!(
        last.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [199, 200, 201]
    );
    assert_eq!(last[2].body, Body::Binary(vec![0, 255]));
    let mid = s.messages(ab.id, Some(10), Some(14), 10).await.unwrap();
    assert_eq!(mid.iter().map(|m| m.seq).collect::<Vec<_>>(), [11, 12, 13]);
    assert_eq!(s.conversation(ab.id).await.unwrap().unwrap().last_seq, 201);

    // A sync page over several conversations: in the order named, each oldest first,
    // the limit over all of them; a conversation with nothing after its seq adds nothing.
    let in_g = s.append(message(g.id, "ann", "in-g")).await.unwrap();
    let page = s
        .messages_after(vec![(g.id, 0), (ab.id, 198), (999_999, 0)], 10)
        .await
        .unwrap();
    assert_eq!(
        page.iter()
            .map(|m| (m.conversation, m.seq))
            .collect::<Vec<_>>(),
        [(g.id, in_g.seq), (ab.id, 199), (ab.id, 200), (ab.id, 201)]
    );
    let capped = s
        .messages_after(vec![(ab.id, 0), (g.id, 0)], 3)
        .await
        .unwrap();
    assert_eq!(
        capped
            .iter()
            .map(|m| (m.conversation, m.seq))
            .collect::<Vec<_>>(),
        [(ab.id, 1), (ab.id, 2), (ab.id, 3)]
    );
    assert!(s
        .messages_after(vec![(ab.id, 201), (g.id, in_g.seq)], 10)
        .await
        .unwrap()
        .is_empty());
    assert!(s.messages_after(Vec::new(), 10).await.unwrap().is_empty());

    // Watermarks only move forward.
    let mark = |read, delivered| Watermark {
        conversation: ab.id,
        user: "bob".into(),
        read,
        delivered,
    };
    s.watermarks(vec![mark(Some(50), Some(60))]).await.unwrap();
    s.watermarks(vec![mark(Some(10), None)]).await.unwrap();
    let bob = s.member(ab.id, "bob").await.unwrap().unwrap();
    assert_eq!((bob.read_seq, bob.delivered_seq), (50, 60));
    let of_cy: Vec<i64> = s
        .conversations_of("cy")
        .await
        .unwrap()
        .iter()
        .map(|(c, _)| c.id)
        .collect();
    assert_eq!(of_cy, [g.id]);

    // Last seen: forward only, a user named twice in one write counted at the later
    // time; users without a time are absent; one read per list, none for an empty one.
    let stats = s.stats().clone();
    let wrote = StoreStats::get(&stats.writes);
    s.last_seen(vec![("ann".into(), 1_000), ("bob".into(), 2_000)])
        .await
        .unwrap();
    assert_eq!(StoreStats::get(&stats.writes) - wrote, 2);
    s.last_seen(vec![
        ("ann".into(), 500),
        ("bob".into(), 3_000),
        ("bob".into(), 2_500),
    ])
    .await
    .unwrap();
    let reads = StoreStats::get(&stats.reads);
    let mut seen = s
        .last_seen_of(vec!["bob".into(), "zed".into(), "ann".into(), "ann".into()])
        .await
        .unwrap();
    seen.sort();
    assert_eq!(seen, [("ann".to_owned(), 1_000), ("bob".to_owned(), 3_000)]);
    assert_eq!(StoreStats::get(&stats.reads) - reads, 1, "one read");
    assert!(s.last_seen_of(vec!["zed".into()]).await.unwrap().is_empty());
    s.last_seen(Vec::new()).await.unwrap();
    let reads = StoreStats::get(&stats.reads);
    assert!(s.last_seen_of(Vec::new()).await.unwrap().is_empty());
    assert_eq!(StoreStats::get(&stats.reads), reads, "nothing read");
    documents(s).await;
}

/// Documents: appends numbered per document, read back in order at one point in time,
/// compacted (the updates up to a number replaced by a snapshot, later ones kept), listed
/// by prefix and page, deleted.
async fn documents(s: &Store) {
    assert_eq!(s.document("d/a").await.unwrap(), None);
    let seqs = s
        .append_documents(
            vec![
                ("d/a".into(), vec![1]),
                ("d/b".into(), vec![9, 9]),
                ("d/a".into(), vec![2]),
            ],
            10,
        )
        .await
        .unwrap();
    assert_eq!(seqs, [1, 1, 2]);
    let seqs = s
        .append_documents(vec![("d/a".into(), vec![3, 3])], 11)
        .await
        .unwrap();
    assert_eq!(seqs, [3]);
    let a = s.document("d/a").await.unwrap().unwrap();
    assert_eq!(a.snapshot, Vec::<u8>::new());
    assert_eq!(a.updates, [(1, vec![1]), (2, vec![2]), (3, vec![3, 3])]);
    assert_eq!(a.last_seq(), 3);
    // Compact the first two.
    assert!(s
        .compact_document("d/a", 2, vec![7, 7, 7], 12)
        .await
        .unwrap());
    let a = s.document("d/a").await.unwrap().unwrap();
    assert_eq!(
        (a.snapshot.as_slice(), a.snapshot_seq),
        (&[7u8, 7, 7][..], 2)
    );
    assert_eq!(a.updates, [(3, vec![3, 3])]);
    // Not back, not past the last update, not a missing document.
    assert!(!s.compact_document("d/a", 1, vec![0], 13).await.unwrap());
    assert!(!s.compact_document("d/a", 9, vec![0], 13).await.unwrap());
    assert!(!s.compact_document("d/none", 1, vec![0], 13).await.unwrap());
    // Appends go on after the snapshot.
    assert_eq!(
        s.append_documents(vec![("d/a".into(), vec![4])], 14)
            .await
            .unwrap(),
        [4]
    );
    let listed = s.documents("d/".into(), None, 10).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["d/a", "d/b"]);
    assert_eq!(
        listed[0].bytes,
        3 + 2 + 1,
        "the snapshot and the updates after it"
    );
    assert_eq!(listed[0].pending_updates, 2);
    assert_eq!((listed[0].created_ms, listed[0].updated_ms), (10, 14));
    let page = s
        .documents("d/".into(), Some("d/a".into()), 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].name, "d/b");
    assert!(s.documents("d/a".into(), None, 1).await.unwrap().len() == 1);
    // `%` and `_` in a prefix are themselves.
    assert!(s.documents("d_".into(), None, 10).await.unwrap().is_empty());
    assert!(s.documents("%".into(), None, 10).await.unwrap().is_empty());
    assert!(s.delete_document("d/a").await.unwrap());
    assert!(!s.delete_document("d/a").await.unwrap());
    assert_eq!(s.document("d/a").await.unwrap(), None);
    // A new document of the same name starts again at 1.
    assert_eq!(
        s.append_documents(vec![("d/a".into(), vec![5])], 15)
            .await
            .unwrap(),
        [1]
    );
}

/// What a store opened on a database of schema version 1 must show: the conversation
/// `old` (titled "old") kept, and last-seen times stored (the table version 2 adds).
async fn migrated_from_v1(s: &Store, old: i64) {
    ready(s).await;
    let kept = s.conversation(old).await.unwrap().unwrap();
    assert_eq!(
        (kept.kind, kept.title.as_deref()),
        (Kind::Group, Some("old"))
    );
    s.last_seen(vec![("ann".into(), 7)]).await.unwrap();
    assert_eq!(
        s.last_seen_of(vec!["ann".into()]).await.unwrap(),
        [("ann".to_owned(), 7)]
    );
    // And documents (version 3).
    s.append_documents(vec![("doc".into(), vec![1])], 1)
        .await
        .unwrap();
    assert_eq!(s.document("doc").await.unwrap().unwrap().last_seq(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backend() {
    let dir = std::env::temp_dir().join(format!("herald-backends-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = Config {
        url: format!("sqlite://{}", dir.join("herald.db").display()),
        ..Config::default()
    };
    let s = Store::open(&config, Arc::new(StoreStats::default())).unwrap();
    battery(&s).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A SQLite database left at schema version 1 by an older Herald is migrated to
/// version 2 at open, keeping what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_migrates_from_v1() {
    let dir = std::env::temp_dir().join(format!("herald-backends-v1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("herald.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(include_str!("../migrations/sqlite/0001_conversations.sql"))
        .unwrap();
    conn.execute(
        "INSERT INTO conversations (kind, title, created_ms) VALUES ('group', 'old', 1)",
        [],
    )
    .unwrap();
    let old = conn.last_insert_rowid();
    conn.execute_batch("PRAGMA user_version = 1").unwrap();
    drop(conn);
    let config = Config {
        url: format!("sqlite://{}", path.display()),
        ..Config::default()
    };
    let s = Store::open(&config, Arc::new(StoreStats::default())).unwrap();
    migrated_from_v1(&s, old).await;
    drop(s);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 3);
    drop(conn);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A connection to the PostgreSQL server's admin database and its URL; `None` (the
/// test then does not run) when there is no server, except under CI, where that fails.
async fn postgres_admin() -> Option<(tokio_postgres::Client, String)> {
    let admin = std::env::var("HERALD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let (client, connection) = match tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("PostgreSQL is needed at {admin} (scripts/test starts it): {e}")
        }
        Err(e) => {
            eprintln!("NOT RUN: no PostgreSQL at {admin} ({e}); under CI this fails");
            return None;
        }
    };
    tokio::spawn(connection);
    Some((client, admin))
}

/// Creates the empty database `db` (dropped first if a run before left it); its URL.
async fn fresh_database(client: &tokio_postgres::Client, admin: &str, db: &str) -> String {
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .await
        .unwrap();
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    format!("{base}/{db}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend() {
    let Some((client, admin)) = postgres_admin().await else {
        return;
    };
    let db = format!("herald_store_test_{}", std::process::id());
    let config = Config {
        url: fresh_database(&client, &admin, &db).await,
        ..Config::default()
    };
    let s = Store::open(&config, Arc::new(StoreStats::default())).unwrap();
    assert_eq!(s.backend(), "postgres");
    battery(&s).await;
    drop(s);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .unwrap();
}

/// A PostgreSQL database left at schema version 1 by an older Herald is migrated to
/// version 2 at open, keeping what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrates_from_v1() {
    let Some((client, admin)) = postgres_admin().await else {
        return;
    };
    let db = format!("herald_store_v1_{}", std::process::id());
    let url = fresh_database(&client, &admin, &db).await;
    let (v1, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // As the version 1 Herald left it: its schema and its row in `schema_migrations`.
    v1.batch_execute(
        "CREATE TABLE schema_migrations \
         (version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL); \
         INSERT INTO schema_migrations (version, applied_ms) VALUES (1, 0)",
    )
    .await
    .unwrap();
    v1.batch_execute(include_str!(
        "../migrations/postgres/0001_conversations.sql"
    ))
    .await
    .unwrap();
    let old: i64 = v1
        .query_one(
            "INSERT INTO conversations (kind, title, created_ms) \
             VALUES ('group', 'old', 1) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let config = Config {
        url,
        ..Config::default()
    };
    let s = Store::open(&config, Arc::new(StoreStats::default())).unwrap();
    migrated_from_v1(&s, old).await;
    drop(s);
    let versions: Vec<i32> = v1
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    drop(v1);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .unwrap();
}

/// Two nodes' stores on one database: opened at once (their migrations take turns), then
/// writing the same conversations in opposite orders, in batched transactions that
/// deadlock each other in PostgreSQL. Every write succeeds (an aborted transaction is run
/// again), and every conversation's sequence numbers are contiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_writers_on_one_database() {
    let Some((client, admin)) = postgres_admin().await else {
        return;
    };
    let db = format!("herald_store_two_{}", std::process::id());
    let config = Config {
        url: fresh_database(&client, &admin, &db).await,
        ..Config::default()
    };
    let (sa, sb) = (
        Arc::new(StoreStats::default()),
        Arc::new(StoreStats::default()),
    );
    let a = Store::open(&config, sa.clone()).unwrap();
    let b = Store::open(&config, sb.clone()).unwrap();
    ready(&a).await;
    ready(&b).await;
    const CONVS: usize = 20;
    const ROUNDS: usize = 30;
    let mut ids = Vec::new();
    for i in 0..CONVS {
        // The same pair made from both nodes at once: one conversation.
        let (x, y) = (format!("u{i}"), format!("v{i}"));
        let (one, two) = tokio::join!(a.create_direct(&x, &y, 1), b.create_direct(&y, &x, 1));
        let (one, two) = (one.unwrap().0, two.unwrap().0);
        assert_eq!(one.id, two.id);
        ids.push(one.id);
    }
    type Write = std::pin::Pin<
        Box<dyn std::future::Future<Output = (i64, Result<store::Stored, StoreError>)> + Send>,
    >;
    let mut writes: Vec<Write> = Vec::new();
    for round in 0..ROUNDS {
        for (k, &id) in ids.iter().enumerate() {
            let w = a.append(message(id, &format!("u{k}"), &format!("a{round}")));
            writes.push(Box::pin(async move { (id, w.await) }) as Write);
        }
        for (k, &id) in ids.iter().enumerate().rev() {
            let w = b.append(message(id, &format!("v{k}"), &format!("b{round}")));
            writes.push(Box::pin(async move { (id, w.await) }) as Write);
        }
    }
    let mut by_conv: std::collections::HashMap<i64, Vec<u64>> = Default::default();
    for (id, w) in futures_join(writes).await {
        let stored = w.expect("every write succeeds");
        by_conv.entry(id).or_default().push(stored.seq);
    }
    for (id, mut seqs) in by_conv {
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=2 * ROUNDS as u64).collect::<Vec<_>>(),
            "conversation {id}"
        );
    }
    let failed = StoreStats::get(&sa.failed_commits) + StoreStats::get(&sb.failed_commits);
    let retried = StoreStats::get(&sa.retried_commits) + StoreStats::get(&sb.retried_commits);
    println!("two writers: {retried} transactions run again, {failed} failed");
    assert_eq!(failed, 0);
    drop((a, b));
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .unwrap();
}

/// Awaits every future, each on a task of its own.
async fn futures_join<T: Send + 'static>(
    futures: Vec<impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
