//! Webhooks: endpoints a namespace's owners add for pushes to one repository or to
//! every repository of the namespace, and their delivery history.

use sea_orm::sea_query::{Expr, Func, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::Serialize;

use super::queue::{requeue, Delivery};
use crate::audit::Action;
use crate::entity::{event_delivery, now_millis, repository, webhook};
use crate::error::{Result, StorageError};
use crate::Storage;

/// At most this many webhooks per namespace, and added by one user.
pub const MAX_PER_NAMESPACE: u64 = 25;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Webhook {
    pub id: i64,
    pub namespace: String,
    /// `None`: every repository of the namespace.
    pub repository: Option<String>,
    pub name: String,
    pub url: String,
    /// Whether deliveries are signed (the secret itself is never shown again).
    pub signed: bool,
    pub created_by: String,
    pub created_at: i64,
    #[serde(skip)]
    pub secret: Option<String>,
}

impl From<webhook::Model> for Webhook {
    fn from(m: webhook::Model) -> Webhook {
        Webhook {
            id: m.id,
            namespace: m.namespace,
            repository: m.repository,
            name: m.name,
            url: m.url,
            signed: m.secret.is_some(),
            created_by: m.created_by,
            created_at: m.created_at,
            secret: m.secret,
        }
    }
}

impl Webhook {
    /// Its scope: its repository, or `<namespace>/*`.
    pub fn scope(&self) -> String {
        match &self.repository {
            Some(repo) => repo.clone(),
            None => format!("{}/*", self.namespace),
        }
    }

    /// The endpoint key its deliveries are queued under.
    pub fn endpoint(&self) -> String {
        endpoint_of(self.id)
    }
}

/// A webhook scope (`acme/app` or `acme/*`, the tag rules' grammar) as the
/// namespace it belongs to and the repository it names, if it names one.
pub fn webhook_scope(scope: &str) -> Result<(String, Option<String>)> {
    Ok(match crate::tag_rules::Scope::parse(scope)? {
        crate::tag_rules::Scope::Namespace(ns) => (ns.to_owned(), None),
        crate::tag_rules::Scope::Repository(name) => {
            (super::namespace_of(name).to_owned(), Some(name.to_owned()))
        }
    })
}

pub fn endpoint_of(id: i64) -> String {
    format!("webhook:{id}")
}

/// A webhook to add (its URL checked by the caller, who knows the rules).
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub namespace: String,
    pub repository: Option<String>,
    pub name: String,
    pub url: String,
    pub secret: Option<String>,
    pub created_by: String,
}

impl Storage {
    /// Adds a webhook, unless its namespace has [`MAX_PER_NAMESPACE`] already or its
    /// creator has added that many anywhere (bounding what one account can make the
    /// registry send and keep).
    pub async fn add_webhook(&self, new: NewWebhook) -> Result<Webhook> {
        let txn = self.write().await?;
        serialize_webhook_adds(&*txn).await?;
        for (column, value) in [
            (webhook::Column::Namespace, &new.namespace),
            (webhook::Column::CreatedBy, &new.created_by),
        ] {
            let count = webhook::Entity::find()
                .filter(column.eq(value.as_str()))
                .count(&*txn)
                .await?;
            if count >= MAX_PER_NAMESPACE {
                return Err(StorageError::Limit {
                    holder: value.clone(),
                    what: "webhooks",
                    limit: MAX_PER_NAMESPACE,
                });
            }
        }
        let model = webhook::Entity::insert(webhook::ActiveModel {
            namespace: Set(new.namespace),
            repository: Set(new.repository),
            name: Set(new.name),
            url: Set(new.url),
            secret: Set(new.secret),
            created_by: Set(new.created_by),
            created_at: Set(now_millis()),
            ..Default::default()
        })
        .exec_with_returning(&*txn)
        .await?;
        let hook = Webhook::from(model);
        let detail = format!("added webhook {} ({}): {}", hook.id, hook.name, hook.url);
        self.audited(&*txn, Action::WebhookChanged, &hook.scope(), Some(detail))
            .await?;
        txn.commit().await?;
        self.events.webhooks_changed();
        Ok(hook)
    }

    pub async fn webhook(&self, id: i64) -> Result<Option<Webhook>> {
        Ok(webhook::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(Webhook::from))
    }

    /// The webhooks of a scope (see [`webhook_scope`]): for a repository, those a
    /// push there goes to (its own and its namespace's); for a namespace, all of them.
    pub async fn webhooks(
        &self,
        namespace: &str,
        repository: Option<&str>,
    ) -> Result<Vec<Webhook>> {
        if let Some(repo) = repository {
            return self.webhooks_for(repo).await;
        }
        Ok(webhook::Entity::find()
            .filter(webhook::Column::Namespace.eq(namespace))
            .order_by_asc(webhook::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Webhook::from)
            .collect())
    }

    /// The webhooks a push to `repo` goes to.
    pub async fn webhooks_for(&self, repo: &str) -> Result<Vec<Webhook>> {
        Ok(webhook::Entity::find()
            .filter(webhook::Column::Namespace.eq(super::namespace_of(repo)))
            .filter(
                Condition::any()
                    .add(webhook::Column::Repository.is_null())
                    .add(webhook::Column::Repository.eq(repo)),
            )
            .order_by_asc(webhook::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Webhook::from)
            .collect())
    }

    /// Removes a webhook, its undelivered events and its history.
    pub async fn remove_webhook(&self, id: i64) -> Result<bool> {
        let txn = self.write().await?;
        let found = webhook::Entity::find_by_id(id).one(&*txn).await?;
        let removed = webhook::Entity::delete_by_id(id).exec(&*txn).await?;
        if let Some(hook) = found.map(Webhook::from) {
            let detail = format!("removed webhook {id} ({}): {}", hook.name, hook.url);
            self.audited(&*txn, Action::WebhookChanged, &hook.scope(), Some(detail))
                .await?;
        }
        event_delivery::Entity::delete_many()
            .filter(event_delivery::Column::Endpoint.eq(endpoint_of(id)))
            .exec(&*txn)
            .await?;
        txn.commit().await?;
        self.events.webhooks_changed();
        Ok(removed.rows_affected > 0)
    }

    /// A webhook's newest deliveries.
    pub async fn webhook_deliveries(&self, id: i64, limit: u64) -> Result<Vec<Delivery>> {
        Ok(event_delivery::Entity::find()
            .filter(event_delivery::Column::Endpoint.eq(endpoint_of(id)))
            .order_by_desc(event_delivery::Column::Id)
            .limit(limit)
            .into_model()
            .all(&self.db)
            .await?)
    }

    /// Sends delivery `delivery` of webhook `id` again (the same event id and body), at
    /// the end of its queue. `None` if there is no such delivery of that webhook.
    pub async fn redeliver(&self, id: i64, delivery: i64) -> Result<Option<i64>> {
        let txn = self.write().await?;
        let original = event_delivery::Entity::find_by_id(delivery)
            .filter(event_delivery::Column::Endpoint.eq(endpoint_of(id)))
            .one(&*txn)
            .await?;
        let Some(original) = original else {
            return Ok(None);
        };
        let new_id = requeue(&*txn, &original).await?;
        txn.commit().await?;
        self.events_written();
        Ok(Some(new_id))
    }

    /// When `repo` was created (Unix milliseconds), for webhook payloads.
    pub async fn repository_created_at(&self, repo: &str) -> Result<Option<i64>> {
        Ok(repository::Entity::find()
            .select_only()
            .column(repository::Column::CreatedAt)
            .filter(repository::Column::Name.eq(repo))
            .into_tuple()
            .one(&self.db)
            .await?)
    }

    /// A receiver's report on a delivery through its callback URL (Docker Hub's
    /// webhook chains): its state and description. False for an unknown token.
    pub async fn webhook_callback(
        &self,
        token: &str,
        state: &str,
        description: &str,
    ) -> Result<bool> {
        // Looked up first: a guessed token costs a read, not a turn at writing.
        let known = event_delivery::Entity::find()
            .filter(event_delivery::Column::CallbackToken.eq(token))
            .count(&self.db)
            .await?;
        if known == 0 {
            return Ok(false);
        }
        let _turn = self.write_turn().await;
        let updated = event_delivery::Entity::update_many()
            .col_expr(event_delivery::Column::CallbackState, Expr::value(state))
            .col_expr(
                event_delivery::Column::CallbackDescription,
                Expr::value(description),
            )
            .filter(event_delivery::Column::CallbackToken.eq(token))
            .exec(&self.db)
            .await?;
        Ok(updated.rows_affected > 0)
    }
}

/// Removes the webhooks of `namespace` and their deliveries, in `db`'s transaction:
/// for a user's removal (their namespace's webhooks must not send to the next owner
/// of the name). Returns how many webhooks went.
pub async fn remove_namespace_webhooks(
    db: &impl ConnectionTrait,
    namespace: &str,
) -> std::result::Result<u64, sea_orm::DbErr> {
    let ids: Vec<i64> = webhook::Entity::find()
        .select_only()
        .column(webhook::Column::Id)
        .filter(webhook::Column::Namespace.eq(namespace))
        .into_tuple()
        .all(db)
        .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    event_delivery::Entity::delete_many()
        .filter(event_delivery::Column::Endpoint.is_in(ids.iter().map(|id| endpoint_of(*id))))
        .exec(db)
        .await?;
    webhook::Entity::delete_many()
        .filter(webhook::Column::Id.is_in(ids.iter().copied()))
        .exec(db)
        .await?;
    Ok(ids.len() as u64)
}

/// PostgreSQL: webhook additions go one at a time (a transaction-scoped advisory
/// lock), so two cannot both count 24 and both be added. SQLite has one writer at a
/// time already.
async fn serialize_webhook_adds(db: &impl ConnectionTrait) -> Result<()> {
    /// "hook" in ASCII: a key of its own.
    const WEBHOOK_ADDS_LOCK: i64 = 0x686f_6f6b;
    if db.get_database_backend() == DbBackend::Postgres {
        let lock = Query::select()
            .expr(Func::cust("pg_advisory_xact_lock").arg(WEBHOOK_ADDS_LOCK))
            .to_owned();
        db.execute(&lock).await?;
    }
    Ok(())
}
