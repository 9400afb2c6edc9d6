//! A transaction's `BEGIN` is never left half-done on a pooled PostgreSQL connection.
//! A caller that gives up while `BEGIN` waits for its reply (a readiness probe timed
//! out while the database was unreachable) must not leave the connection inside a
//! transaction sqlx does not know of: the next plain statement on it (an upload's row,
//! written by a chunk) would be answered as done and never committed (sqlx 0.9.0,
//! transact-rs/sqlx#4393). Seen as a spurious DIGEST_INVALID in the cluster fault test.

use std::process::Command;
use std::time::Duration;

use berth_storage::database::begin_whole;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, TransactionOptions};

fn signal(pid: i64, which: &str) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {which} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begin_given_up_on_leaves_no_transaction_behind() {
    let Some(admin) = berth_tests::postgres_admin_url() else {
        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL test");
        return;
    };
    let url = berth_tests::fresh_postgres_database(&admin).await;
    // One connection: what a request leaves on it, the next request finds.
    let mut options = ConnectOptions::new(url.clone());
    options
        .max_connections(1)
        .min_connections(1)
        .sqlx_logging(false);
    let db = Database::connect(options).await.unwrap();
    db.execute_unprepared("CREATE TABLE marks (n integer)")
        .await
        .unwrap();
    let pid = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT pg_backend_pid()::bigint AS pid",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "pid")
        .unwrap();

    // The server stalls: BEGIN is sent and gets no reply, and the caller gives up.
    signal(pid, "-STOP");
    let attempt = tokio::time::timeout(
        Duration::from_millis(300),
        begin_whole(&db, TransactionOptions::default()),
    )
    .await;
    signal(pid, "-CONT");
    assert!(attempt.is_err(), "BEGIN waited for the stalled server");

    // A plain statement afterwards on the same connection is committed: another
    // connection sees it.
    db.execute_unprepared("INSERT INTO marks VALUES (1)")
        .await
        .unwrap();
    let other = Database::connect(url.as_str()).await.unwrap();
    let seen = other
        .query_one_raw(sea_orm::Statement::from_string(
            other.get_database_backend(),
            "SELECT count(*)::bigint AS n FROM marks",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(
        seen, 1,
        "the insert was committed, not left in a transaction"
    );
}
