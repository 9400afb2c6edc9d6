//! The command line: `berth`'s commands, arguments and help, as clap reads them. What
//! each command does is in `commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Pull, push, tag, list and inspect container images, without a daemon.
#[derive(Parser)]
#[command(name = "berth", version)]
pub struct Cli {
    /// Where images and credentials are kept [env: BERTH_HOME] [default: ~/.local/share/berth]
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Registry for names without one [env: BERTH_DEFAULT_REGISTRY] [default: docker.io]
    #[arg(long, global = true, value_name = "HOST")]
    pub default_registry: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Log in to a registry (Docker's token flow or Basic auth); saves the credentials.
    Login {
        host: String,
        #[arg(short, long)]
        username: String,
        /// Read the password from standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Forget the credentials of a registry.
    Logout { host: String },
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// List images, like `docker images`.
    Ls {
        /// Only this repository (`NAME`), or this one tag (`NAME:TAG`).
        repository: Option<String>,
        /// Show the digest the registry knows each image by (pulled or pushed images).
        #[arg(long)]
        digests: bool,
        /// Show whole image ids.
        #[arg(long)]
        no_trunc: bool,
        /// Print only image ids.
        #[arg(short, long)]
        quiet: bool,
        /// `table`, `json`, or a template such as `{{.Repository}}:{{.Tag}}`
        /// (fields: .ID .Repository .Tag .Digest .CreatedSince .CreatedAt .Size
        /// .VirtualSize; `table` before it prints headers).
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Download an image (only the layers not already here).
    Pull {
        reference: String,
        /// os/arch[/variant] to pick from a multi-platform image [default: this machine's]
        #[arg(long)]
        platform: Option<String>,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Upload an image (only the blobs the registry does not have).
    Push {
        reference: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Remove an image name (the data stays until `prune`).
    Rm { reference: String },
    /// Delete blobs no image uses.
    Prune,
    /// Show an image's details as JSON, like `docker image inspect`.
    Inspect { reference: String },
    /// Show how an image was built, like `docker history`.
    History {
        reference: String,
        /// Sizes and times for people (`-H=false`: bytes and RFC 3339 times).
        #[arg(short = 'H', long, value_name = "BOOL", default_value_t = true,
              action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true",
              require_equals = true)]
        human: bool,
        /// Do not cut long commands and ids.
        #[arg(long)]
        no_trunc: bool,
        /// Print only image ids.
        #[arg(short, long)]
        quiet: bool,
        /// `table`, `json`, or a template (fields: .ID .CreatedSince .CreatedAt
        /// .CreatedBy .Size .Comment).
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Build an image from a Dockerfile, like `docker build`.
    Build(BuildArgs),
    /// Make an image from a root filesystem tarball, like `docker import`.
    Import { tarball: PathBuf, reference: String },
    /// Write images to a tar file that `docker load` and OCI tools read.
    Save {
        #[arg(required = true)]
        references: Vec<String>,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Read images from a `docker save` / `berth image save` / OCI archive tar file.
    Load {
        #[arg(short, long)]
        input: PathBuf,
    },
}

// `berth image build`'s arguments (its help is the variant's).
#[derive(Args)]
pub struct BuildArgs {
    /// Name the image (repeatable).
    #[arg(short, long = "tag", required = true)]
    pub tags: Vec<String>,
    /// The Dockerfile [default: CONTEXT/Dockerfile]
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    /// KEY=VALUE for an ARG (KEY alone takes the value from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Build this stage (`FROM … AS name`) instead of the last.
    #[arg(long)]
    pub target: Option<String>,
    /// os/arch of `FROM scratch` stages and of base images to pull [default: this machine's]
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image id.
    #[arg(short, long)]
    pub quiet: bool,
    /// A secret for `RUN --mount=type=secret`: `id=NAME,src=FILE` or `id=NAME,env=VAR`
    /// (repeatable); never stored in the image.
    #[arg(long = "secret", value_name = "id=NAME,src=FILE")]
    pub secrets: Vec<String>,
    /// The directory COPY and ADD read from.
    pub context: PathBuf,
}
