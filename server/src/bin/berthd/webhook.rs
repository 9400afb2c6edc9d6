//! `berthd webhook`: webhooks of repositories and namespaces, and their deliveries.

use std::io::Read;

use berth_events::webhooks::{checked, WebhookRequest};
use berth_storage::events::queue::Status;
use berth_storage::events::webhooks::webhook_scope;
use clap::Subcommand;

use crate::{millis_to_rfc3339, ConfigArgs};

#[derive(Subcommand)]
pub(crate) enum WebhookCommand {
    /// Post every tag pushed in SCOPE (a repository acme/app, or every repository of
    /// a namespace: acme/*) to URL, as Docker Hub's push payload.
    Add {
        scope: String,
        name: String,
        url: String,
        /// Read a secret from standard input: requests are then signed with
        /// X-Berth-Signature-256 (HMAC-SHA256 of the body).
        #[arg(long)]
        secret_stdin: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List the webhooks of a namespace (acme/*), or those a push to a repository
    /// (acme/app) goes to.
    Ls {
        scope: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Remove webhook ID; its undelivered events are dropped.
    Rm {
        id: i64,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Show webhook ID's newest deliveries.
    Deliveries {
        id: i64,
        #[arg(long, default_value_t = 20)]
        limit: u64,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Send delivery DELIVERY of webhook ID again (the same event id and payload).
    Redeliver {
        id: i64,
        delivery: i64,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

pub(crate) async fn webhook_command(command: WebhookCommand) -> anyhow::Result<()> {
    let args = match &command {
        WebhookCommand::Add { config, .. }
        | WebhookCommand::Ls { config, .. }
        | WebhookCommand::Rm { config, .. }
        | WebhookCommand::Deliveries { config, .. }
        | WebhookCommand::Redeliver { config, .. } => config,
    };
    let config = args.resolve()?;
    let storage = crate::admin_storage(&config).await?;
    match command {
        WebhookCommand::Add {
            scope,
            name,
            url,
            secret_stdin,
            ..
        } => {
            let (namespace, repository) = webhook_scope(&scope)?;
            let secret = match secret_stdin {
                true => {
                    let mut text = String::new();
                    std::io::stdin().read_to_string(&mut text)?;
                    Some(text.trim_end_matches(['\r', '\n']).to_owned())
                }
                false => None,
            };
            let request = WebhookRequest {
                namespace,
                repository,
                name: &name,
                url: &url,
                secret: secret.as_deref(),
                created_by: "berthd".into(),
            };
            let hook = storage
                .add_webhook(checked(request, config.webhooks.allow_private)?)
                .await?;
            println!(
                "webhook {}: tags pushed in {scope} are posted to {}{}",
                hook.id,
                hook.url,
                if hook.signed { ", signed" } else { "" }
            );
        }
        WebhookCommand::Ls { scope, .. } => {
            let (namespace, repository) = webhook_scope(&scope)?;
            let hooks = storage.webhooks(&namespace, repository.as_deref()).await?;
            println!("ID\tSCOPE\tNAME\tURL\tSIGNED\tCREATED");
            for h in hooks {
                let scope = h.scope();
                println!(
                    "{}\t{scope}\t{}\t{}\t{}\t{}",
                    h.id,
                    h.name,
                    h.url,
                    if h.signed { "yes" } else { "no" },
                    millis_to_rfc3339(h.created_at)
                );
            }
        }
        WebhookCommand::Rm { id, .. } => {
            if !storage.remove_webhook(id).await? {
                anyhow::bail!("no webhook {id}");
            }
            println!("removed webhook {id}");
        }
        WebhookCommand::Deliveries { id, limit, .. } => {
            if storage.webhook(id).await?.is_none() {
                anyhow::bail!("no webhook {id}");
            }
            println!("DELIVERY\tEVENT\tSTATUS\tRESPONSE\tMS\tATTEMPTS\tCREATED");
            for d in storage.webhook_deliveries(id, limit.min(500)).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    d.id,
                    d.event_id,
                    Status::from_i16(d.status).as_str(),
                    d.last_status
                        .map(|s| s.to_string())
                        .or(d.last_error)
                        .unwrap_or_else(|| "-".into()),
                    d.response_ms
                        .map_or_else(|| "-".into(), |ms| ms.to_string()),
                    d.attempts,
                    millis_to_rfc3339(d.created_at)
                );
            }
        }
        WebhookCommand::Redeliver { id, delivery, .. } => {
            match storage.redeliver(id, delivery).await? {
                Some(new_id) => println!(
                    "delivery {delivery} is sent again as delivery {new_id} (by a running berthd)"
                ),
                None => anyhow::bail!("webhook {id} has no delivery {delivery}"),
            }
        }
    }
    Ok(())
}
