//! End-to-end tests: each starts real `berthd` processes and talks to them over HTTP
//! (and with real registry clients). One test binary, so it links once.

mod accounts_security;
mod api;
mod audit;
mod auth;
mod browser;
mod cli;
mod cli_build_features;
mod cli_docker_parity;
mod clients;
mod cluster;
mod disk_full;
mod durability;
mod events;
mod gc;
mod hostile_images;
mod image;
mod immutable_tags;
mod proxy;
mod quotas;
mod retention;
mod security;
mod serve;
mod web;
mod web_lifecycle;
mod web_mirrors;
mod web_untagged;

/// Runs each listed `async fn(Berthd)` once on SQLite and once on PostgreSQL,
/// optionally with users created first (`users = &[ALICE, BOB]; f, g`).
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        $crate::on_both_databases!(users = &[]; $($name),*);
    };
    (users = $users:expr; $($name:ident),* $(,)?) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            const USERS: &[(&str, &str, bool)] = $users;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = berth_tests::Berthd::start_with_users(berth_tests::Db::Sqlite, USERS).await.unwrap();
                    super::$name(server).await;
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            const USERS: &[(&str, &str, bool)] = $users;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match berth_tests::Berthd::start_with_users(berth_tests::Db::Postgres, USERS).await {
                        Some(server) => super::$name(server).await,
                        None => eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant"),
                    }
                }
            )*
        }
    };
}
