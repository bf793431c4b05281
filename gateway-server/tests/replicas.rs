//! Two gateway-server processes sharing one database (PostgreSQL; SQLite when no PostgreSQL is
//! reachable outside CI) and one Redis act as one for routing: a session keeps its provider
//! across replicas, and a circuit opened by failures seen on one replica keeps the other away
//! from that provider.

mod db_support;

mod replica_support;

use gateway_core::forward::{ClientOptions, build_client};
use gateway_mock::{MockBehavior, MockUpstream};
use replica_support::{redis_available, start_replica};

fn start(
    config: &std::path::Path,
    db_url: &str,
    dir: &std::path::Path,
    prefix: &str,
    name: &str,
) -> replica_support::Replica {
    start_replica(config, db_url, "redis://127.0.0.1:6379", prefix, dir, name)
}

#[tokio::test]
async fn replicas_share_sessions_and_breakers_through_redis() {
    if !redis_available() {
        return;
    }
    let p1 = MockUpstream::start().await.expect("mock");
    let p2 = MockUpstream::start().await.expect("mock");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[[providers]]\nname='p1'\ntype='claude'\nbase_url='{}'\napi_key='a'\nmax_retry_attempts=1\ncircuit_breaker_failure_threshold=1\n\
             [[providers]]\nname='p2'\ntype='claude'\nbase_url='{}'\napi_key='b'\nmax_retry_attempts=1\ncircuit_breaker_failure_threshold=1\n\
             [[users]]\nname='a'\n[[users.keys]]\nname='k'\nkey='sk-replica-01'\n",
            p1.url(),
            p2.url()
        ),
    )
    .expect("config");
    let pg = db_support::postgres().await;
    let db_url = match &pg {
        Some(t) => t.url.clone(),
        None => format!("sqlite://{}", dir.path().join("gw.db").display()),
    };
    let prefix = format!("gwtest-{:016x}:", rand::random::<u64>());
    let a = start(&config, &db_url, dir.path(), &prefix, "a");
    let b = start(&config, &db_url, dir.path(), &prefix, "b");
    let client = build_client(&ClientOptions::default()).expect("client");
    let send = |base: String, session: String| {
        let client = client.clone();
        async move {
            client
                .post(format!("{base}/v1/messages"))
                .header("x-api-key", "sk-replica-01")
                .header("x-session-id", session)
                .body(r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#)
                .send()
                .await
                .expect("send")
                .status()
        }
    };

    // A session started on A continues on B on the same provider.
    assert_eq!(send(a.url.clone(), "sticky".into()).await, 200);
    let first = if p1.received().len() == 1 { &p1 } else { &p2 };
    for _ in 0..6 {
        assert_eq!(send(b.url.clone(), "sticky".into()).await, 200);
    }
    assert_eq!(first.received().len(), 7, "all on the provider that served the session first");

    // p1 fails once on A: its circuit opens for everyone.
    p1.clear_received();
    p2.clear_received();
    p1.set_behavior(MockBehavior { force_status: Some(500), ..MockBehavior::default() });
    let mut session = 0;
    while p1.received().is_empty() {
        session += 1;
        assert!(session < 50, "p1 never chosen");
        assert_eq!(send(a.url.clone(), format!("s-{session}")).await, 200, "failover to p2");
    }
    p1.set_behavior(MockBehavior::default());
    for i in 0..10 {
        assert_eq!(send(b.url.clone(), format!("b-{i}")).await, 200);
    }
    assert_eq!(p1.received().len(), 1, "replica B kept away from the provider whose circuit opened on A");
}
