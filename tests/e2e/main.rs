//! End-to-end tests: each starts real `berthd` processes and talks to them over HTTP
//! (and with real registry clients). One test binary, so it links once.

mod api;
mod clients;
mod durability;
mod serve;

/// Runs each listed `async fn(Berthd)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = berth_tests::Berthd::start(berth_tests::Db::Sqlite).await.unwrap();
                    super::$name(server).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match berth_tests::Berthd::start(berth_tests::Db::Postgres).await {
                        Some(server) => super::$name(server).await,
                        None => eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant"),
                    }
                }
            )*
        }
    };
}
