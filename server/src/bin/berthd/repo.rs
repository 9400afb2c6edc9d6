//! `berthd repo`: visibility, immutable tag rules and retention policies.

use clap::Subcommand;

use crate::storage::size_text;
use crate::{millis_to_rfc3339, ConfigArgs};

#[derive(Subcommand)]
pub(crate) enum RepoCommand {
    /// Make a repository private: pulled by its owner and admins only.
    Private {
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Make a repository public: pulled by anyone.
    Public {
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Immutable tags: rules that keep existing tags from being overwritten or deleted.
    #[command(subcommand)]
    Immutable(ImmutableCommand),
    /// Retention policies: which tags are deleted on every garbage collection pass.
    #[command(subcommand)]
    Retention(RetentionCommand),
}

#[derive(Subcommand)]
pub(crate) enum RetentionCommand {
    /// Set the policy of SCOPE: a repository (acme/app) or every repository of a
    /// namespace (acme/*; a repository's own policy wins). A tag goes when every
    /// condition given lets it go; tags matching --keep and immutable tags stay.
    Set {
        scope: String,
        /// Keep the N most recently pushed tags.
        #[arg(long, value_name = "N")]
        keep_last: Option<u32>,
        /// Keep tags matching this glob (v*, release-?.?).
        #[arg(long, value_name = "PATTERN")]
        keep: Option<String>,
        /// Delete tags not pushed for this long (e.g. 30days).
        #[arg(long, value_name = "DURATION")]
        unpushed_for: Option<String>,
        /// Delete tags not pulled for this long (a tag never pulled counts from its push).
        #[arg(long, value_name = "DURATION")]
        unpulled_for: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List policies.
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Remove the policy of SCOPE.
    Rm {
        scope: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Show what the policies (all, or SCOPE's) would delete now, and the bytes freed.
    Preview {
        scope: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Apply the policies (all, or SCOPE's) now.
    Run {
        scope: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum ImmutableCommand {
    /// Protect the tags of SCOPE that match PATTERN: once such a tag exists, pushes
    /// that would point it at another manifest and deletes of it are refused.
    ///
    /// SCOPE is a repository (acme/app) or every repository of a namespace (acme/*).
    /// PATTERN is a glob over tag names: * any run of characters, ? one character,
    /// [abc], [a-z] and [!abc] one of (or none of) a set: v*, release-?.?, or * for
    /// every tag.
    Add {
        scope: String,
        pattern: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List rules: all, or those of SCOPE (a repository: its own and its namespace's;
    /// a namespace acme/*: every rule in it).
    List {
        scope: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Remove rule ID (from `list`): its tags can be overwritten and deleted again.
    Rm {
        id: i64,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

pub(crate) async fn repo_command(command: RepoCommand) -> anyhow::Result<()> {
    let (name, private, args) = match &command {
        RepoCommand::Private { name, config } => (name, true, config),
        RepoCommand::Public { name, config } => (name, false, config),
        RepoCommand::Immutable(command) => return immutable_command(command).await,
        RepoCommand::Retention(command) => return retention_command(command).await,
    };
    let storage = crate::admin_storage(&args.resolve()?).await?;
    storage.set_private(name, private).await?;
    println!(
        "{name} is now {}",
        if private { "private" } else { "public" }
    );
    Ok(())
}

pub(crate) async fn immutable_command(command: &ImmutableCommand) -> anyhow::Result<()> {
    let args = match command {
        ImmutableCommand::Add { config, .. }
        | ImmutableCommand::List { config, .. }
        | ImmutableCommand::Rm { config, .. } => config,
    };
    let storage = crate::admin_storage(&args.resolve()?).await?;
    match command {
        ImmutableCommand::Add { scope, pattern, .. } => {
            let rule = storage.add_immutable_rule(scope, pattern).await?;
            println!(
                "rule {}: tags matching {:?} in {} are immutable",
                rule.id, rule.pattern, rule.scope
            );
        }
        ImmutableCommand::List { scope, .. } => {
            println!("ID\tSCOPE\tPATTERN\tCREATED");
            for r in storage.immutable_rules(scope.as_deref()).await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    r.id,
                    r.scope,
                    r.pattern,
                    millis_to_rfc3339(r.created_at)
                );
            }
        }
        ImmutableCommand::Rm { id, .. } => {
            storage.remove_immutable_rule(*id).await?;
            println!("removed rule {id}");
        }
    }
    Ok(())
}

pub(crate) async fn retention_command(command: &RetentionCommand) -> anyhow::Result<()> {
    use berth_storage::retention::{RetentionPlan, RetentionPolicy};
    let args = match command {
        RetentionCommand::Set { config, .. }
        | RetentionCommand::List { config }
        | RetentionCommand::Rm { config, .. }
        | RetentionCommand::Preview { config, .. }
        | RetentionCommand::Run { config, .. } => config,
    };
    let storage = crate::admin_storage(&args.resolve()?).await?;
    let duration = |key: &'static str, text: &Option<String>| -> anyhow::Result<_> {
        match text {
            None => Ok(None),
            Some(t) => Ok(Some(berth_config::parse_duration(key, t)?.ok_or_else(
                || anyhow::anyhow!("--{key} needs a duration such as 30days"),
            )?)),
        }
    };
    let print_plan = |plan: &RetentionPlan, verb: &str| {
        println!("REPOSITORY\tTAG\tDIGEST\tPUSHED\tLAST PULLED");
        for t in &plan.tags {
            println!(
                "{}\t{}\t{}\t{}\t{}",
                t.repository,
                t.tag,
                t.digest,
                millis_to_rfc3339(t.pushed_at),
                t.last_pulled_at.map_or("never".into(), millis_to_rfc3339)
            );
        }
        println!(
            "{verb} {} tags and {} manifests; {} freed once garbage collection runs",
            plan.tags.len(),
            plan.manifests.len(),
            size_text(plan.freed_bytes)
        );
    };
    match command {
        RetentionCommand::Set {
            scope,
            keep_last,
            keep,
            unpushed_for,
            unpulled_for,
            ..
        } => {
            let policy = RetentionPolicy {
                scope: scope.clone(),
                keep_last: *keep_last,
                keep_pattern: keep.clone(),
                unpushed_for: duration("unpushed-for", unpushed_for)?,
                unpulled_for: duration("unpulled-for", unpulled_for)?,
            };
            storage.set_retention(&policy).await?;
            println!("retention policy of {scope} set; preview it with `berthd repo retention preview '{scope}'`");
        }
        RetentionCommand::List { .. } => {
            println!("SCOPE\tKEEP LAST\tKEEP\tUNPUSHED FOR\tUNPULLED FOR");
            let text = |d: Option<std::time::Duration>| {
                d.map_or("-".into(), |d| humantime::format_duration(d).to_string())
            };
            for p in storage.retention_policies(None).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    p.scope,
                    p.keep_last.map_or("-".into(), |n| n.to_string()),
                    p.keep_pattern.as_deref().unwrap_or("-"),
                    text(p.unpushed_for),
                    text(p.unpulled_for)
                );
            }
        }
        RetentionCommand::Rm { scope, .. } => {
            if !storage.remove_retention(scope).await? {
                anyhow::bail!("{scope} has no retention policy");
            }
            println!("removed the retention policy of {scope}");
        }
        RetentionCommand::Preview { scope, .. } => {
            print_plan(
                &storage.retention_preview(scope.as_deref()).await?,
                "would delete",
            );
        }
        RetentionCommand::Run { scope, .. } => {
            print_plan(&storage.apply_retention(scope.as_deref()).await?, "deleted");
        }
    }
    Ok(())
}
