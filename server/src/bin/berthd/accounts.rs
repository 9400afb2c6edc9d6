//! `berthd user`, `org` and `token`: accounts, organizations and tokens.

use berth_auth::{Accounts, Role, TokenScope};
use berth_storage::audit::Actor;
use clap::Subcommand;

use crate::{millis_to_rfc3339, ConfigArgs};

#[derive(Subcommand)]
pub(crate) enum OrgCommand {
    /// Create organization NAME (its namespace NAME/*) with OWNER as its first admin.
    ///
    /// Users and organizations share one namespace: NAME may not be a user's.
    Add {
        name: String,
        #[arg(long)]
        owner: String,
        /// Take over NAME if it belonged to a removed user (reserved since `berthd user
        /// rm`). The organization owns whatever the user left under NAME/.
        #[arg(long)]
        reclaim: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Members of an organization.
    #[command(subcommand)]
    Member(OrgMemberCommand),
}

#[derive(Subcommand)]
pub(crate) enum OrgMemberCommand {
    /// Add USER to ORG (or change their role): read pulls private repositories, write
    /// also pushes, admin also deletes.
    Add {
        org: String,
        user: String,
        #[arg(long, default_value = "write")]
        role: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Remove USER from ORG (not its last admin).
    Rm {
        org: String,
        user: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List ORG's members and their roles.
    Ls {
        org: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token for USER and print it (the only time it is shown). Use it as the
    /// password in `docker login`.
    Create {
        user: String,
        /// A name to recognise the token by.
        #[arg(long)]
        name: String,
        /// read, read-write or read-write-delete.
        #[arg(long, default_value = "read-write")]
        scope: String,
        /// Days until it expires (default: never).
        #[arg(long)]
        expires_days: Option<u32>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List USER's tokens (never their secrets).
    List {
        user: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Revoke token ID of USER: it stops working at the next login or token request.
    Revoke {
        user: String,
        id: i64,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum UserCommand {
    /// Create a user; the password is read from standard input.
    ///
    /// Users and organizations share one namespace: NAME may not be an organization's.
    /// A removed user's name stays reserved; --reclaim gives it to this new account.
    Add {
        name: String,
        /// May push and delete anywhere.
        #[arg(long)]
        admin: bool,
        /// Take over NAME if it belonged to a removed user (reserved since `berthd user
        /// rm`). The new account owns whatever the old one left under NAME/.
        #[arg(long)]
        reclaim: bool,
        /// Read the password from standard input (required: passwords never go on a command line).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List users.
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Change a user's password, read from standard input.
    ///
    /// Ends the user's web sessions and `docker login` tokens (clients log in again);
    /// personal access tokens they made keep working (see `berthd token revoke`).
    Passwd {
        name: String,
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Delete a user, with their web sessions, every token and their organization
    /// memberships.
    ///
    /// The name stays reserved: sign-up and `berthd user add` refuse it, so nobody
    /// inherits the user's repositories. Give it to a new account with
    /// `berthd user add NAME --reclaim --password-stdin`.
    Rm {
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

pub(crate) async fn user_command(command: UserCommand) -> anyhow::Result<()> {
    let args = match &command {
        UserCommand::Add { config, .. }
        | UserCommand::List { config }
        | UserCommand::Passwd { config, .. }
        | UserCommand::Rm { config, .. } => config,
    };
    let accounts = open_accounts(args).await?;
    match command {
        UserCommand::Add {
            name,
            admin,
            reclaim,
            ..
        } => {
            let password = read_password()?;
            let user = if reclaim {
                accounts.add_user_reclaiming(&name, password, admin).await?
            } else {
                accounts.add_user(&name, password, admin).await?
            };
            println!(
                "created user {}{}",
                user.name,
                if user.admin { " (admin)" } else { "" }
            );
        }
        UserCommand::List { .. } => {
            for u in accounts.users().await? {
                println!("{}{}", u.name, if u.admin { "\tadmin" } else { "" });
            }
        }
        UserCommand::Passwd { name, .. } => {
            accounts.set_password(&name, read_password()?).await?;
            println!("password changed for {name}; their web sessions and docker logins ended");
        }
        UserCommand::Rm { name, .. } => {
            accounts.remove_user(&name).await?;
            println!("deleted user {name}; the name stays reserved (reclaim it with `berthd user add {name} --reclaim`)");
        }
    }
    Ok(())
}

pub(crate) async fn token_command(command: TokenCommand) -> anyhow::Result<()> {
    let args = match &command {
        TokenCommand::Create { config, .. }
        | TokenCommand::List { config, .. }
        | TokenCommand::Revoke { config, .. } => config,
    };
    let accounts = open_accounts(args).await?;
    match command {
        TokenCommand::Create {
            user,
            name,
            scope,
            expires_days,
            ..
        } => {
            let (id, secret) = accounts
                .create_token(&user, &name, TokenScope::parse(&scope)?, expires_days)
                .await?;
            eprintln!("token {id} for {user} ({scope}); it is shown only once:");
            println!("{secret}");
        }
        TokenCommand::List { user, .. } => {
            println!("ID\tNAME\tSCOPE\tEXPIRES\tLAST USED");
            for t in accounts.tokens(&user).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    t.id,
                    t.name,
                    t.scope,
                    t.expires_at.map_or("never".to_string(), millis_to_rfc3339),
                    t.last_used_at
                        .map_or("never".to_string(), millis_to_rfc3339)
                );
            }
        }
        TokenCommand::Revoke { user, id, .. } => {
            accounts.revoke_token(&user, id).await?;
            println!("revoked token {id} of {user}");
        }
    }
    Ok(())
}

pub(crate) async fn org_command(command: OrgCommand) -> anyhow::Result<()> {
    match command {
        OrgCommand::Add {
            name,
            owner,
            reclaim,
            config,
        } => {
            let accounts = open_accounts(&config).await?;
            if reclaim {
                accounts.add_org_reclaiming(&name, &owner).await?;
            } else {
                accounts.add_org(&name, &owner).await?;
            }
            println!("created organization {name} (admin: {owner})");
        }
        OrgCommand::Member(OrgMemberCommand::Add {
            org,
            user,
            role,
            config,
        }) => {
            let role = Role::parse(&role)?;
            let accounts = open_accounts(&config).await?;
            accounts.set_member(&org, &user, role).await?;
            println!("{user} is a member of {org} ({})", role.name());
        }
        OrgCommand::Member(OrgMemberCommand::Rm { org, user, config }) => {
            let accounts = open_accounts(&config).await?;
            accounts.remove_member(&org, &user).await?;
            println!("{user} is no longer a member of {org}");
        }
        OrgCommand::Member(OrgMemberCommand::Ls { org, config }) => {
            let accounts = open_accounts(&config).await?;
            anyhow::ensure!(
                accounts.org_exists(&org).await?,
                "no such organization: {org}"
            );
            println!("USER\tROLE");
            for (user, role) in accounts.members(&org).await? {
                println!("{user}\t{}", role.name());
            }
        }
    }
    Ok(())
}

/// The accounts of a data dir (or configured database), their tables in place.
pub(crate) async fn open_accounts(args: &ConfigArgs) -> anyhow::Result<Accounts> {
    // What these commands change is recorded as the local admin's doing.
    Ok(Accounts::open(&args.resolve()?)
        .await?
        .by(Actor::local_admin()))
}

/// The password from standard input, without its trailing newline.
pub(crate) fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
