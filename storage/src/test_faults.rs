//! Failure injection for the end-to-end tests, compiled into debug builds only.
//!
//! `BERTH_TEST_FAIL_COMMITS=<file>`: while the file holds a number N > 0, the next N
//! SQLite commits fail, each taking one off. A failing commit is refused by a commit
//! hook, so SQLite rolls the transaction back and COMMIT (or an autocommit statement)
//! returns an error: the state a COMMIT that meets a full disk leaves behind. It covers
//! every write path, batched or not, without touching the code under test. Release
//! builds ignore the variable. (PostgreSQL tests kill the server's backend instead.)

use sea_orm::sqlx::pool::PoolOptions;
use sea_orm::sqlx::Sqlite;

/// Adds the commit hook to every new connection when the variable is set.
#[cfg(debug_assertions)]
pub(crate) fn install(options: PoolOptions<Sqlite>) -> PoolOptions<Sqlite> {
    let Some(file) = std::env::var_os("BERTH_TEST_FAIL_COMMITS") else {
        return options;
    };
    let file = std::path::PathBuf::from(file);
    options.after_connect(move |conn, _| {
        let file = file.clone();
        Box::pin(async move {
            conn.lock_handle()
                .await?
                .set_commit_hook(move || !take_one(&file));
            Ok(())
        })
    })
}

#[cfg(not(debug_assertions))]
pub(crate) fn install(options: PoolOptions<Sqlite>) -> PoolOptions<Sqlite> {
    options
}

/// Takes one failure off the count in `file`; whether there was one. Commits run one
/// at a time (under SQLite's write lock), so read-then-write does not race.
#[cfg(debug_assertions)]
fn take_one(file: &std::path::Path) -> bool {
    let left: u64 = std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if left == 0 {
        return false;
    }
    let _ = std::fs::write(file, (left - 1).to_string());
    tracing::warn!(
        left = left - 1,
        "failing this commit (BERTH_TEST_FAIL_COMMITS)"
    );
    true
}

/// `BERTH_TEST_GC_PAUSE=<dir>`: at each named point of a collection pass, while
/// `<dir>/<point>` exists, the collector marks `<dir>/<point>.reached` and waits — so a
/// test can race a push against a decided collection, or kill the process mid-pass.
#[cfg(debug_assertions)]
pub(crate) async fn gc_pause(point: &str) {
    let Some(dir) = std::env::var_os("BERTH_TEST_GC_PAUSE") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let hold = dir.join(point);
    if !hold.exists() {
        return;
    }
    let _ = std::fs::write(dir.join(format!("{point}.reached")), b"");
    tracing::warn!(point, "garbage collection paused (BERTH_TEST_GC_PAUSE)");
    while hold.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[cfg(not(debug_assertions))]
pub(crate) async fn gc_pause(_point: &str) {}
