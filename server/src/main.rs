//! The `berthd` command line.

use std::path::PathBuf;

use berth_auth::{Accounts, Role, TokenScope};
use berth_config::{Config, Layer, LogFormat};
use clap::{Args, Parser, Subcommand};

/// Berth: a self-hosted OCI container registry.
#[derive(Parser)]
#[command(name = "berthd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry server.
    ///
    /// Settings come from flags, then BERTH_* environment variables, then the
    /// config file, then defaults (listen 0.0.0.0:5000, data in ./berth-data).
    Serve(ConfigArgs),
    /// Manage user accounts (works while the server runs).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage organizations: shared namespaces (works while the server runs).
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage personal access tokens (works while the server runs).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage repositories (works while the server runs).
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Exit 0 if URL answers 200 (a container health check: the image has no curl).
    Probe {
        /// e.g. http://127.0.0.1:5000/readyz
        url: String,
    },
}

#[derive(Subcommand)]
enum OrgCommand {
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
enum OrgMemberCommand {
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
}

#[derive(Subcommand)]
enum TokenCommand {
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
enum RepoCommand {
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
}

#[derive(Subcommand)]
enum UserCommand {
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

/// Options shared by every command that opens the registry's data.
#[derive(Args)]
struct ConfigArgs {
    /// TOML config file (keys in the README: listen, data_dir, log_format, [database] url,
    /// [storage] backend/root/bucket/endpoint/region/redirect/upload_expiry_secs,
    /// [limits], [auth]).
    #[arg(long, value_name = "FILE", env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [env: BERTH_LISTEN] [default: 0.0.0.0:5000]
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// Directory for the SQLite database and blobs [env: BERTH_DATA_DIR] [default: ./berth-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log format, text or json [env: BERTH_LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
}

impl ConfigArgs {
    fn resolve(&self) -> Result<Config, berth_config::ConfigError> {
        let file = match &self.config {
            Some(path) => Layer::from_file(path)?,
            None => Layer::default(),
        };
        let env = Layer::from_env(|k| std::env::var(k).ok())?;
        let flags = Layer {
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            log_format: self.log_format.clone(),
            ..Layer::default()
        };
        Config::resolve(file, env, flags)
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args
            .resolve()
            .map_err(anyhow::Error::from)
            .and_then(|config| {
                init_logging(config.log_format);
                actix_web::rt::System::new().block_on(berth_server::serve(config))
            }),
        Command::User(command) => admin(user_command(command)),
        Command::Repo(command) => admin(repo_command(command)),
        Command::Token(command) => admin(token_command(command)),
        Command::Org(command) => admin(org_command(command)),
        Command::Probe { url } => probe(&url),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs an admin command (logging as text: its output is for a person).
fn admin(command: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    init_logging(LogFormat::Text);
    actix_web::rt::System::new().block_on(command)
}

fn init_logging(format: LogFormat) {
    // actix-http logs a client's malformed request (docker probes TLS before plain
    // HTTP) as an ERROR; it is not a server error.
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=warn,actix_http::h1::dispatcher=off")
    });
    // Logs go to stderr: stdout is for command output (`berthd user list`).
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

async fn user_command(command: UserCommand) -> anyhow::Result<()> {
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

async fn token_command(command: TokenCommand) -> anyhow::Result<()> {
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

async fn org_command(command: OrgCommand) -> anyhow::Result<()> {
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
    }
    Ok(())
}

fn millis_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339())
}

/// The accounts of a data dir (or configured database), their tables in place.
async fn open_accounts(args: &ConfigArgs) -> anyhow::Result<Accounts> {
    Ok(Accounts::open(&args.resolve()?).await?)
}

async fn repo_command(command: RepoCommand) -> anyhow::Result<()> {
    let (name, private, args) = match &command {
        RepoCommand::Private { name, config } => (name, true, config),
        RepoCommand::Public { name, config } => (name, false, config),
    };
    let storage = berth_server::open_storage(&args.resolve()?).await?;
    storage.set_private(name, private).await?;
    println!(
        "{name} is now {}",
        if private { "private" } else { "public" }
    );
    Ok(())
}

/// One plain-HTTP GET; fails unless the answer is 200.
fn probe(url: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("probe needs an http:// URL"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let timeout = std::time::Duration::from_secs(3);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)?
        .next()
        .ok_or_else(|| anyhow::anyhow!("cannot resolve {host}"))?;
    let mut conn = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    write!(
        conn,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer)?;
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(
        status_line.split(' ').nth(1) == Some("200"),
        "{url}: {status_line}"
    );
    Ok(())
}

/// The password from standard input, without its trailing newline.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
