//! Events: the outbox (an event row written in the transaction of the change it
//! describes), deliveries (rows per endpoint, fanned out off the request path; runs
//! of events notification endpoints share are stored once, in the event log),
//! per-endpoint leases (so one replica delivers an endpoint at a time, in order), and
//! the webhooks namespace owners add.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("event_outbox")
                .col(big_pk_auto("seq"))
                .col(text("payload"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("event_deliveries")
                .col(big_pk_auto("id"))
                .col(text("endpoint"))
                .col(text("event_id"))
                .col(text("action"))
                .col(text("repository"))
                .col(text("body"))
                .col(integer("events"))
                .col(big_integer_null("log_id"))
                .col(small_integer("status"))
                .col(integer("attempts"))
                .col(big_integer("next_at"))
                .col(big_integer("created_at"))
                .col(big_integer_null("delivered_at"))
                .col(integer_null("last_status"))
                .col(text_null("last_error"))
                .col(integer_null("response_ms"))
                .col(text_null("response_excerpt"))
                .col(text_null("callback_token"))
                .col(text_null("callback_state"))
                .col(text_null("callback_description"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("event_deliveries_queue")
                .table("event_deliveries")
                .col("endpoint")
                .col("status")
                .col("id")
                .to_owned(),
        )
        .await?;
        // Which endpoints have deliveries waiting, and how many (every second).
        m.create_index(
            Index::create()
                .name("event_deliveries_waiting")
                .table("event_deliveries")
                .col("status")
                .col("endpoint")
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("event_deliveries_callback")
                .table("event_deliveries")
                .col("callback_token")
                .to_owned(),
        )
        .await?;
        // Which runs are still wanted (after each sent envelope).
        m.create_index(
            Index::create()
                .name("event_deliveries_log")
                .table("event_deliveries")
                .col("log_id")
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("event_log")
                .col(big_pk_auto("id"))
                .col(text("body"))
                .col(integer("events"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("event_leases")
                .col(text("endpoint").primary_key())
                .col(text("owner"))
                .col(big_integer("until"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("webhooks")
                .col(big_pk_auto("id"))
                .col(text("namespace"))
                .col(text_null("repository"))
                .col(text("name"))
                .col(text("url"))
                .col(text_null("secret"))
                .col(text("created_by"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("webhooks_namespace")
                .table("webhooks")
                .col("namespace")
                .to_owned(),
        )
        .await
    }
}
