//! Read-your-writes for the metadata cache of replicas sharing one PostgreSQL database.
//!
//! A replica may serve a cached manifest, blob or tag list only once it knows that no
//! other replica changed the repository since it cached them: before each cached read
//! it learns the repository's current generation (kept by triggers, see migration
//! m0008) from a query that started after the request arrived. So a change committed
//! anywhere before a request arrives is seen by it, whichever replica answers.
//!
//! One query at a time asks for every repository requests are waiting on: requests
//! arriving while it runs wait for the next one. The database sees at most one such
//! query per round trip however many requests there are, and a request waits at most
//! two round trips.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};
use tokio::sync::{watch, Notify};

use crate::entity::repository;
use crate::error::{Result, StorageError};

/// A check the database does not answer within this fails its requests (503) rather
/// than holding them while the database is unreachable.
const QUERY_LIMIT: Duration = Duration::from_secs(5);

/// Generation by repository name, or why the database could not say.
type Answer = Option<std::result::Result<Arc<HashMap<String, i64>>, Arc<str>>>;

struct Pending {
    names: HashSet<String>,
    answer: watch::Sender<Answer>,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Option<Pending>>,
    wake: Notify,
}

pub(crate) struct Generations {
    shared: Arc<Shared>,
}

impl Generations {
    /// Starts the task that runs the checks, for as long as the runtime lives.
    pub(crate) fn start(db: DatabaseConnection) -> Generations {
        let shared = Arc::new(Shared::default());
        tokio::spawn(run(db, shared.clone()));
        Generations { shared }
    }

    /// The generation of `repo` as of a moment after this call; `None` when the
    /// repository does not exist.
    pub(crate) async fn current(&self, repo: &str) -> Result<Option<i64>> {
        let mut answer = {
            let mut pending = self.shared.pending.lock().unwrap();
            let pending = pending.get_or_insert_with(|| Pending {
                names: HashSet::new(),
                answer: watch::channel(None).0,
            });
            if !pending.names.contains(repo) {
                pending.names.insert(repo.to_owned());
            }
            pending.answer.subscribe()
        };
        self.shared.wake.notify_one();
        let unavailable = |why: &str| StorageError::Database(DbErr::Custom(why.to_owned()));
        let answer = answer
            .wait_for(Option::is_some)
            .await
            .map_err(|_| unavailable("the generation check stopped"))?;
        match answer.as_ref().expect("waited for an answer") {
            Ok(generations) => Ok(generations.get(repo).copied()),
            Err(why) => Err(unavailable(why)),
        }
    }
}

async fn run(db: DatabaseConnection, shared: Arc<Shared>) {
    loop {
        shared.wake.notified().await;
        // Requests arriving from here on wait for the next query.
        let Some(batch) = shared.pending.lock().unwrap().take() else {
            continue;
        };
        let answer = match tokio::time::timeout(QUERY_LIMIT, query(&db, batch.names)).await {
            Ok(Ok(generations)) => Ok(Arc::new(generations)),
            Ok(Err(e)) => Err(format!("cannot check repository generations: {e}").into()),
            Err(_) => Err(format!("repository generations not read within {QUERY_LIMIT:?}").into()),
        };
        batch.answer.send_replace(Some(answer));
    }
}

async fn query(db: &DatabaseConnection, names: HashSet<String>) -> Result<HashMap<String, i64>> {
    let rows: Vec<(String, i64)> = repository::Entity::find()
        .select_only()
        .columns([repository::Column::Name, repository::Column::Generation])
        .filter(repository::Column::Name.is_in(names))
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
}
