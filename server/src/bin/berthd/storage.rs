//! `berthd gc`, `quota` and `usage`: garbage collection and storage use.

use berth_storage::gc::Sweep;
use clap::Subcommand;

use crate::ConfigArgs;

#[derive(Subcommand)]
pub(crate) enum QuotaCommand {
    /// Limit NAMESPACE (a user's or an organization's) to SIZE bytes of distinct
    /// blobs, e.g. 50GiB or 20GB; pushes beyond it are refused.
    Set {
        namespace: String,
        size: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Remove NAMESPACE's own quota ([quota] default applies again).
    Rm {
        namespace: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Namespaces with a quota of their own.
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

pub(crate) async fn quota_command(command: QuotaCommand) -> anyhow::Result<()> {
    let args = match &command {
        QuotaCommand::Set { config, .. }
        | QuotaCommand::Rm { config, .. }
        | QuotaCommand::List { config } => config,
    };
    let storage = crate::admin_storage(&args.resolve()?).await?;
    match command {
        QuotaCommand::Set {
            namespace, size, ..
        } => {
            let bytes = berth_config::parse_bytes(&size).map_err(anyhow::Error::msg)?;
            storage.set_quota(&namespace, bytes).await?;
            println!("quota of {namespace}: {}", size_text(bytes));
        }
        QuotaCommand::Rm { namespace, .. } => {
            if !storage.remove_quota(&namespace).await? {
                anyhow::bail!("{namespace} has no quota of its own");
            }
            println!("removed the quota of {namespace}");
        }
        QuotaCommand::List { .. } => {
            println!("NAMESPACE\tQUOTA\tUSED");
            for (namespace, _) in storage.quotas().await? {
                let usage = storage.namespace_usage(&namespace).await?;
                println!(
                    "{namespace}\t{}\t{}",
                    usage.quota.map_or("unlimited".into(), size_text),
                    size_text(usage.bytes)
                );
            }
        }
    }
    Ok(())
}

pub(crate) async fn usage_command(name: Option<String>, args: ConfigArgs) -> anyhow::Result<()> {
    let storage = crate::admin_storage(&args.resolve()?).await?;
    let quota_text = |q: Option<u64>| q.map_or("unlimited".into(), size_text);
    match name {
        Some(repo) if repo.contains('/') => {
            println!(
                "{repo}\t{}",
                size_text(storage.repository_usage(&repo).await?)
            );
        }
        Some(namespace) => {
            let usage = storage.namespace_usage(&namespace).await?;
            println!("NAMESPACE\tUSED\tQUOTA");
            println!(
                "{namespace}\t{}\t{}",
                size_text(usage.bytes),
                quota_text(usage.quota)
            );
        }
        None => {
            let registry = storage.registry_usage().await?;
            println!(
                "registry: {} blobs, {} stored, {} logical (deduplication {:.2}x)",
                registry.blobs,
                size_text(registry.stored_bytes),
                size_text(registry.logical_bytes),
                registry.dedup_ratio()
            );
            println!("NAMESPACE\tUSED\tQUOTA");
            for usage in storage.namespace_usages().await? {
                println!(
                    "{}\t{}\t{}",
                    usage.namespace,
                    size_text(usage.bytes),
                    quota_text(usage.quota)
                );
            }
        }
    }
    Ok(())
}

/// Bytes as people read them, with the exact count.
pub(crate) fn size_text(bytes: u64) -> String {
    let human = berth_oci::size::human_size(bytes, berth_oci::size::SizeFormat::OneDecimal);
    format!("{human} ({bytes} bytes)")
}

pub(crate) async fn gc_command(dry_run: bool, args: ConfigArgs) -> anyhow::Result<()> {
    let storage = crate::admin_storage(&args.resolve()?).await?;
    match storage.collect_garbage(dry_run, Sweep::Always).await? {
        Ok(report) => {
            println!("{report}");
            Ok(())
        }
        Err(held) => anyhow::bail!("{held}; try again when it is done"),
    }
}
