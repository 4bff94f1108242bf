//! `cocoon`: the command-line client of `cocoond`, in Docker's idiom. The
//! exit code of `run` and `exec` is the workload's; errors of the daemon or
//! of the request exit with 125, as Docker's do (126 when the program
//! cannot be run, 127 when it does not exist). `run` (unless `-d`) and
//! `exec` stream over a WebSocket: output as it comes, stdin with `-i`, a
//! terminal with `-t`, signals forwarded (see `cocoon_api::console`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cocoon_api::client::{encode_segment, Client, ClientError};
use cocoon_api::console::{self, Outcome};
use cocoon_api::types::{ClientMessage, ImageInfo, ImportRequest, RegistryAuth, RemovedImage};
use cocoon_proto::ConsoleSize;
use cocoon_runtime::sandbox::{ExecStreamSpec, Network, SandboxRecord, SandboxSpec};
use http::Method;
use http_body_util::BodyExt;

/// Exit code for failures of the daemon or of the request itself.
const EXIT_DAEMON: u8 = 125;
const EXIT_CANNOT_RUN: u8 = 126;
const EXIT_NOT_FOUND: u8 = 127;

#[derive(Debug, Parser)]
#[command(
    name = "cocoon",
    version,
    about = "Run containers in micro-VMs (client of cocoond)"
)]
struct Cli {
    /// The daemon's socket.
    #[arg(
        long,
        global = true,
        env = "COCOON_SOCKET",
        default_value = "/run/cocoon/cocoond.sock"
    )]
    socket: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, clap::Args)]
struct StdioOpts {
    /// Keep stdin open and send it to the process.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give the process a terminal (the local one goes into raw mode).
    #[arg(short = 't', long)]
    tty: bool,
}

#[derive(Debug, clap::Args)]
struct ProcessOpts {
    /// Set an environment variable (KEY=value).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Working directory inside the sandbox.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// User to run as (uid[:gid] or root).
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a sandbox from IMAGE and run CMD (or the image's default) in it.
    Run {
        /// Delete the sandbox when it stops.
        #[arg(long)]
        rm: bool,
        /// Print the sandbox id and leave it running.
        #[arg(short = 'd', long)]
        detach: bool,
        #[command(flatten)]
        stdio: StdioOpts,
        #[command(flatten)]
        process: ProcessOpts,
        /// vCPUs.
        #[arg(long, value_name = "N")]
        cpus: Option<u32>,
        /// Guest memory (e.g. 512m, 1g; a bare number is bytes).
        #[arg(short = 'm', long, value_name = "SIZE")]
        memory: Option<String>,
        /// Size of the writable scratch disk (e.g. 2g).
        #[arg(long, value_name = "SIZE")]
        disk: Option<String>,
        /// Network: none (no NIC, the default) or default (outbound access
        /// through NAT; no access to other sandboxes or the host).
        #[arg(long, value_name = "none|default")]
        network: Option<String>,
        /// Label the sandbox (KEY=value).
        #[arg(short = 'l', long = "label", value_name = "K=V")]
        labels: Vec<String>,
        /// Stop the sandbox after this many seconds.
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        /// The image.
        image: String,
        /// The command and its arguments (after the image, or after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// List sandboxes (running ones unless -a).
    Ps {
        /// Show every sandbox.
        #[arg(short = 'a', long)]
        all: bool,
        /// Print ids only.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Run a command in a running sandbox.
    Exec {
        #[command(flatten)]
        stdio: StdioOpts,
        #[command(flatten)]
        process: ProcessOpts,
        /// The sandbox.
        id: String,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Attach to a sandbox's init: its output from now on and, when it was
    /// started with -i, its stdin, until it stops; the exit code is the
    /// init's.
    Attach {
        /// Do not attach stdin.
        #[arg(long)]
        no_stdin: bool,
        /// The sandbox.
        id: String,
    },
    /// Print what a sandbox's init process wrote.
    Logs {
        /// Keep printing output as it is written, until the sandbox stops.
        #[arg(short = 'f', long)]
        follow: bool,
        /// The sandbox.
        id: String,
    },
    /// Stop sandboxes.
    Stop {
        /// Seconds the init gets after SIGTERM before the VM is killed
        /// (default: the daemon's `--stop-timeout`).
        #[arg(short = 't', long = "time", value_name = "SECS")]
        time: Option<u64>,
        /// The sandboxes.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete sandboxes.
    Rm {
        /// Delete running sandboxes too (stopping them).
        #[arg(short = 'f', long)]
        force: bool,
        /// The sandboxes.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Show sandboxes as JSON.
    Inspect {
        /// The sandboxes.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List images.
    Images,
    /// Import an OCI or `docker save` archive (or OCI layout directory), or
    /// the built-in busybox image with --builtin busybox.
    Import {
        /// Build a built-in image instead (busybox).
        #[arg(long, value_name = "NAME", conflicts_with = "archive")]
        builtin: Option<String>,
        /// The archive, as a path on the daemon's machine.
        #[arg(required_unless_present = "builtin")]
        archive: Option<PathBuf>,
        /// NAME[:TAG] to give it.
        name: Option<String>,
    },
    /// Pull an image from a registry.
    Pull {
        /// User name for the registry (the password is read from stdin).
        #[arg(long, requires = "password_stdin")]
        username: Option<String>,
        /// Read the registry password (with --username) or, alone, a bearer
        /// token from stdin.
        #[arg(long)]
        password_stdin: bool,
        /// host[:port]/repo[:tag][@digest]
        reference: String,
        /// NAME[:TAG] to give it (default: the reference).
        name: Option<String>,
    },
    /// Copy files between a sandbox and the local machine
    /// (`cp SRC ID:DEST` or `cp ID:SRC DEST`; `-` is a tar on stdin/stdout).
    Cp {
        /// Source: a local path or ID:PATH.
        src: String,
        /// Destination: a local path or ID:PATH.
        dst: String,
    },
    /// Remove images.
    Rmi {
        /// Names or digests.
        #[arg(required = true)]
        images: Vec<String>,
    },
}

/// Parses `512m`, `1g`, `1.5g`, `1048576` (bytes) into MiB, rounding up.
fn parse_size_mib(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        Some((i, 't')) => (&t[..i], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .ok_or_else(|| format!("invalid size {s:?} (e.g. 512m, 2g)"))?;
    let bytes = n * mult as f64;
    if bytes > (1u64 << 50) as f64 {
        return Err(format!("size {s:?} is too large"));
    }
    Ok((bytes as u64).div_ceil(1 << 20))
}

fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>, String> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("label {l:?} is not KEY=value"))
        })
        .collect()
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("cocoon: {msg}");
    ExitCode::from(EXIT_DAEMON)
}

fn api_fail(e: &ClientError) -> ExitCode {
    eprintln!("cocoon: {e}");
    match e {
        ClientError::Api { code, .. } if code == "executable_not_found" => {
            ExitCode::from(EXIT_NOT_FOUND)
        }
        ClientError::Api { code, .. } if code == "process_rejected" => {
            ExitCode::from(EXIT_CANNOT_RUN)
        }
        _ => ExitCode::from(EXIT_DAEMON),
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(if code < 0 { EXIT_DAEMON } else { 255 }))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("starting the runtime: {e}")),
    };
    let client = Client::new(&cli.socket);
    rt.block_on(run(client, cli.cmd))
}

async fn run(client: Client, cmd: Cmd) -> ExitCode {
    match cmd {
        Cmd::Run {
            rm,
            detach,
            stdio,
            process,
            cpus,
            memory,
            disk,
            network,
            labels,
            timeout,
            image,
            cmd,
        } => {
            let mut spec = SandboxSpec::new(image);
            spec.cmd = cmd;
            spec.env = process.env;
            spec.workdir = process.workdir;
            spec.user = process.user;
            if let Some(c) = cpus {
                spec.vcpus = c;
            }
            for (value, slot) in [(memory, &mut spec.memory_mib), (disk, &mut spec.disk_mib)] {
                if let Some(v) = value {
                    match parse_size_mib(&v) {
                        Ok(m) => *slot = m,
                        Err(e) => return fail(e),
                    }
                }
            }
            spec.network = match network.as_deref() {
                None | Some("none") => Network::None,
                Some("default") => Network::Default,
                Some(other) => return fail(format!("unknown network {other:?} (none, default)")),
            };
            spec.labels = match parse_labels(&labels) {
                Ok(l) => l,
                Err(e) => return fail(e),
            };
            spec.timeout_s = timeout;
            spec.stdin = stdio.interactive;
            spec.tty = stdio.tty;
            run_sandbox(&client, spec, rm, detach).await
        }
        Cmd::Ps { all, quiet } => {
            let path = if all {
                "/v1/sandboxes"
            } else {
                "/v1/sandboxes?state=running"
            };
            let list: Vec<SandboxRecord> = match client.json(Method::GET, path, None::<&()>).await {
                Ok(l) => l,
                Err(e) => return api_fail(&e),
            };
            let mut out = std::io::stdout().lock();
            if quiet {
                for s in list {
                    let _ = writeln!(out, "{}", s.id);
                }
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(
                out,
                "{:<12}  {:<20}  {:<30}  {:<8}  {:<20}",
                "SANDBOX ID", "IMAGE", "COMMAND", "STATE", "CREATED"
            );
            for s in list {
                let state = match (&s.state, &s.exit) {
                    (st, Some(e)) => format!("{st} ({})", e.exit_code),
                    (st, None) => st.to_string(),
                };
                let command: String = s.process.args.join(" ").chars().take(30).collect();
                let _ = writeln!(
                    out,
                    "{:<12}  {:<20}  {:<30}  {:<8}  {:<20}",
                    s.id,
                    s.spec.image.chars().take(20).collect::<String>(),
                    command,
                    state,
                    s.created_at
                );
            }
            ExitCode::SUCCESS
        }
        Cmd::Exec {
            stdio,
            process,
            id,
            cmd,
        } => {
            let mut spec = ExecStreamSpec::new(cmd);
            spec.env = process.env;
            spec.workdir = process.workdir;
            spec.user = process.user;
            spec.stdin = stdio.interactive;
            spec.tty = stdio.tty;
            if stdio.tty {
                spec.size = console::terminal_size().map(|(rows, cols)| ConsoleSize { rows, cols });
            }
            let path = format!("/v1/sandboxes/{}/exec/ws", encode_segment(&id));
            let ws = match client.websocket(&path).await {
                Ok(ws) => ws,
                Err(e) => return api_fail(&e),
            };
            let start = ClientMessage::Start(spec);
            session_exit(console::run(ws, Some(start), stdio.interactive, stdio.tty).await)
        }
        Cmd::Attach { no_stdin, id } => {
            let path = format!("/v1/sandboxes/{}", encode_segment(&id));
            let r: SandboxRecord = match client.json(Method::GET, &path, None::<&()>).await {
                Ok(r) => r,
                Err(e) => return api_fail(&e),
            };
            let stdin = r.spec.stdin && !no_stdin;
            match client
                .websocket(&format!("{path}/attach/ws?logs=false&stdin={stdin}"))
                .await
            {
                Ok(ws) => session_exit(console::run(ws, None, stdin, r.spec.tty).await),
                Err(e) => api_fail(&e),
            }
        }
        Cmd::Logs { follow: false, id } => match print_logs(&client, &id).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => api_fail(&e),
        },
        Cmd::Logs { follow: true, id } => match follow_logs(&client, &id).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => api_fail(&e),
        },
        Cmd::Stop { time, ids } => {
            let query = time.map(|t| format!("?timeout={t}")).unwrap_or_default();
            each(ids, |id| {
                let client = client.clone();
                let query = query.clone();
                async move {
                    let path = format!("/v1/sandboxes/{}/stop{query}", encode_segment(&id));
                    client
                        .json::<SandboxRecord>(Method::POST, &path, None::<&()>)
                        .await
                        .map(|_| id)
                }
            })
            .await
        }
        Cmd::Rm { force, ids } => {
            each(ids, |id| {
                let client = client.clone();
                async move {
                    let path = format!("/v1/sandboxes/{}", encode_segment(&id));
                    if !force {
                        let r: SandboxRecord = client.json(Method::GET, &path, None::<&()>).await?;
                        if !r.state.is_final() {
                            return Err(ClientError::Api {
                                status: http::StatusCode::CONFLICT,
                                code: "wrong_state".into(),
                                message: format!(
                                    "sandbox {id} is {}: stop it first or use rm -f",
                                    r.state
                                ),
                                sandbox_id: None,
                            });
                        }
                    }
                    client
                        .json::<SandboxRecord>(Method::DELETE, &path, None::<&()>)
                        .await
                        .map(|_| id)
                }
            })
            .await
        }
        Cmd::Inspect { ids } => {
            let mut found = Vec::new();
            let mut code = ExitCode::SUCCESS;
            for id in ids {
                let path = format!("/v1/sandboxes/{}", encode_segment(&id));
                match client
                    .json::<serde_json::Value>(Method::GET, &path, None::<&()>)
                    .await
                {
                    Ok(v) => found.push(v),
                    Err(e) => code = api_fail(&e),
                }
            }
            match serde_json::to_string_pretty(&found) {
                Ok(s) => println!("{s}"),
                Err(e) => return fail(e),
            }
            code
        }
        Cmd::Images => {
            let list: Vec<ImageInfo> =
                match client.json(Method::GET, "/v1/images", None::<&()>).await {
                    Ok(l) => l,
                    Err(e) => return api_fail(&e),
                };
            println!(
                "{:<30}  {:<19}  {:>10}",
                "REPOSITORY:TAG", "IMAGE ID", "SIZE"
            );
            for i in list {
                let id: String = i
                    .digest
                    .trim_start_matches("sha256:")
                    .chars()
                    .take(12)
                    .collect();
                let size = format!("{:.1}MB", i.size as f64 / 1e6);
                if i.tags.is_empty() {
                    println!("{:<30}  {:<19}  {:>10}", "<none>", id, size);
                }
                for t in i.tags {
                    println!("{t:<30}  {id:<19}  {size:>10}");
                }
            }
            ExitCode::SUCCESS
        }
        Cmd::Import {
            builtin,
            archive,
            name,
        } => {
            let archive = match archive.map(|a| std::path::absolute(&a)).transpose() {
                Ok(a) => a.map(|a| a.display().to_string()),
                Err(e) => return fail(format!("archive path: {e}")),
            };
            let req = ImportRequest {
                archive,
                name,
                builtin,
                ..ImportRequest::default()
            };
            match client
                .json::<ImageInfo>(Method::POST, "/v1/images", Some(&req))
                .await
            {
                Ok(i) => {
                    println!("{}", i.digest);
                    for t in i.tags {
                        println!("tagged {t}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => api_fail(&e),
            }
        }
        Cmd::Pull {
            username,
            password_stdin,
            reference,
            name,
        } => {
            let auth = if password_stdin {
                let mut secret = String::new();
                if let Err(e) = std::io::stdin().read_line(&mut secret) {
                    return fail(format!("reading the password from stdin: {e}"));
                }
                let secret = secret.trim_end_matches(['\n', '\r']).to_string();
                Some(match username {
                    Some(u) => RegistryAuth {
                        username: Some(u),
                        password: Some(secret),
                        token: None,
                    },
                    None => RegistryAuth {
                        username: None,
                        password: None,
                        token: Some(secret),
                    },
                })
            } else {
                None
            };
            match cocoon_api::cli::pull::pull(&client, &reference, name, auth).await {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => api_fail(&e),
            }
        }
        Cmd::Cp { src, dst } => match cocoon_api::cli::cp::copy(&client, &src, &dst).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(cocoon_api::cli::cp::CpError::Api(e)) => api_fail(&e),
            Err(e) => fail(e),
        },
        Cmd::Rmi { images } => {
            each(images, |name| {
                let client = client.clone();
                async move {
                    let path = format!("/v1/images/{}", encode_segment(&name));
                    client
                        .json::<RemovedImage>(Method::DELETE, &path, None::<&()>)
                        .await
                        .map(|r| format!("untagged {name} ({})", r.digest))
                }
            })
            .await
        }
    }
}

/// Runs `f` for each item, printing what it returns; fails (125) if any did.
async fn each<F, Fut>(items: Vec<String>, f: F) -> ExitCode
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<String, ClientError>>,
{
    let mut code = ExitCode::SUCCESS;
    for item in items {
        match f(item).await {
            Ok(line) => println!("{line}"),
            Err(e) => code = api_fail(&e),
        }
    }
    code
}

/// The CLI's exit code for how a streaming session ended.
fn session_exit(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Exit(e) => exit_code(e.exit_code),
        Outcome::Error(e) => api_fail(&ClientError::Api {
            status: http::StatusCode::OK,
            code: e.code,
            message: e.message,
            sandbox_id: e.sandbox_id,
        }),
        Outcome::Lost(m) => fail(m),
    }
}

/// `logs -f`: each stream on its own request, printed as it comes, until
/// the sandbox stops.
async fn follow_logs(client: &Client, id: &str) -> Result<(), ClientError> {
    let base = format!("/v1/sandboxes/{}/logs?follow=true", encode_segment(id));
    let copy = |stream: &'static str, mut out: Box<dyn Write>| {
        let path = format!("{base}&stream={stream}");
        async move {
            let mut body = client.open(Method::GET, &path, None).await?;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
                if let Some(data) = frame.data_ref() {
                    let _ = out.write_all(data).and_then(|()| out.flush());
                }
            }
            Ok::<(), ClientError>(())
        }
    };
    let (a, b) = tokio::join!(
        copy("stdout", Box::new(std::io::stdout())),
        copy("stderr", Box::new(std::io::stderr()))
    );
    a.and(b)
}

async fn print_logs(client: &Client, id: &str) -> Result<(), ClientError> {
    // Separate requests keep each stream on its own descriptor; the order
    // between the two is lost (both are in `?stream=all`).
    let base = format!("/v1/sandboxes/{}/logs", encode_segment(id));
    let out = client
        .raw(Method::GET, &format!("{base}?stream=stdout"), None)
        .await?;
    let err = client
        .raw(Method::GET, &format!("{base}?stream=stderr"), None)
        .await?;
    let _ = std::io::stdout().write_all(&out);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(&err);
    Ok(())
}

/// `run`: create, attach to the init (its output from the start, stdin
/// with `-i`) until the sandbox stops, remove with `--rm`.
async fn run_sandbox(client: &Client, spec: SandboxSpec, rm: bool, detach: bool) -> ExitCode {
    let (stdin, tty) = (spec.stdin, spec.tty);
    let created: SandboxRecord = match client
        .json(Method::POST, "/v1/sandboxes", Some(&spec))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            // A refused init leaves a failed sandbox: --rm cleans it up.
            if let (
                true,
                ClientError::Api {
                    sandbox_id: Some(id),
                    ..
                },
            ) = (rm, &e)
            {
                let path = format!("/v1/sandboxes/{}", encode_segment(id));
                let _ = client
                    .json::<SandboxRecord>(Method::DELETE, &path, None::<&()>)
                    .await;
            }
            return api_fail(&e);
        }
    };
    if detach {
        println!("{}", created.id);
        return ExitCode::SUCCESS;
    }
    let path = format!("/v1/sandboxes/{}", encode_segment(&created.id));
    let code = match client
        .websocket(&format!("{path}/attach/ws?logs=true&stdin={stdin}"))
        .await
    {
        Ok(ws) => session_exit(console::run(ws, None, stdin, tty).await),
        Err(e) => api_fail(&e),
    };
    if rm {
        if let Err(e) = client
            .json::<SandboxRecord>(Method::DELETE, &path, None::<&()>)
            .await
        {
            eprintln!("cocoon: removing {}: {e}", created.id);
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size_mib("512m"), Ok(512));
        assert_eq!(parse_size_mib("1g"), Ok(1024));
        assert_eq!(parse_size_mib("1.5G"), Ok(1536));
        assert_eq!(parse_size_mib("1048576"), Ok(1));
        assert_eq!(parse_size_mib("1"), Ok(1));
        assert_eq!(parse_size_mib("256MB"), Ok(256));
        assert!(parse_size_mib("").is_err());
        assert!(parse_size_mib("-1g").is_err());
        assert!(parse_size_mib("lots").is_err());
    }

    #[test]
    fn cli_parses_docker_style_run() {
        let cli = Cli::try_parse_from([
            "cocoon",
            "run",
            "--rm",
            "-e",
            "A=1",
            "-w",
            "/tmp",
            "-u",
            "1000",
            "--cpus",
            "2",
            "--memory",
            "512m",
            "busybox",
            "--",
            "sh",
            "-c",
            "echo hi; exit 3",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let Cmd::Run {
            rm,
            image,
            cmd,
            cpus,
            memory,
            process,
            ..
        } = cli.cmd
        else {
            panic!("not run");
        };
        assert!(rm);
        assert_eq!(image, "busybox");
        assert_eq!(cmd, vec!["sh", "-c", "echo hi; exit 3"]);
        assert_eq!(cpus, Some(2));
        assert_eq!(memory.as_deref(), Some("512m"));
        assert_eq!(process.env, vec!["A=1"]);
        assert_eq!(process.workdir.as_deref(), Some("/tmp"));
        assert_eq!(process.user.as_deref(), Some("1000"));
    }

    #[test]
    fn cli_parses_interactive_flags() {
        let cli = Cli::try_parse_from(["cocoon", "run", "--rm", "-it", "busybox", "sh", "-l"])
            .unwrap_or_else(|e| panic!("{e}"));
        let Cmd::Run {
            stdio, image, cmd, ..
        } = cli.cmd
        else {
            panic!("not run");
        };
        assert!(stdio.interactive && stdio.tty);
        assert_eq!(
            (image.as_str(), cmd),
            ("busybox", vec!["sh".to_string(), "-l".into()])
        );
        let cli = Cli::try_parse_from(["cocoon", "exec", "-i", "abc", "--", "cat", "-n"])
            .unwrap_or_else(|e| panic!("{e}"));
        let Cmd::Exec { stdio, id, cmd, .. } = cli.cmd else {
            panic!("not exec");
        };
        assert!(stdio.interactive && !stdio.tty);
        assert_eq!(
            (id.as_str(), cmd),
            ("abc", vec!["cat".to_string(), "-n".into()])
        );
        let cli =
            Cli::try_parse_from(["cocoon", "logs", "-f", "abc"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(cli.cmd, Cmd::Logs { follow: true, .. }));
    }

    #[test]
    fn cli_parses_exec_with_dashes() {
        let cli = Cli::try_parse_from(["cocoon", "exec", "abc", "ls", "-l", "/"])
            .unwrap_or_else(|e| panic!("{e}"));
        let Cmd::Exec { id, cmd, .. } = cli.cmd else {
            panic!("not exec");
        };
        assert_eq!(id, "abc");
        assert_eq!(cmd, vec!["ls", "-l", "/"]);
    }
}
