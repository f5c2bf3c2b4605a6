//! `user`, `role` and `auth` (etcd v2's `/v2/auth`), and the `--username/-u` credentials every
//! command sends, with etcdctl v2's commands, messages and exit status (1 for any refusal: its
//! auth commands print the server's message and exit 1).

use std::io::{BufRead, IsTerminal, Write};
use std::sync::OnceLock;

use base64::Engine;
use bytes::Bytes;
use clap::{Args, Subcommand};
use hyper::Method;
use serde::Deserialize;

use crate::client::{json_response, CliError, Client};
use crate::http::encode;
use crate::output::Output;

static CREDENTIALS: OnceLock<hyper::header::HeaderValue> = OnceLock::new();

/// The `Authorization` header every request of this process carries, if `-u` was given.
pub fn authorization() -> Option<&'static hyper::header::HeaderValue> {
    CREDENTIALS.get()
}

/// Install `-u user[:password]`, asking for the password on the terminal when it is missing.
pub fn init(username: Option<&str>) -> Result<(), CliError> {
    let Some(spec) = username else {
        return Ok(());
    };
    let (user, password) = match spec.split_once(':') {
        Some((u, p)) => (u.to_string(), p.to_string()),
        None => (spec.to_string(), prompt("Password: ")?),
    };
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = hyper::header::HeaderValue::from_str(&format!("Basic {token}"))
        .map_err(|_| CliError::Usage("bad --username".into()))?;
    value.set_sensitive(true);
    let _ = CREDENTIALS.set(value);
    Ok(())
}

/// Read a password without echo. Only from a terminal: a script that forgot the password must
/// fail at once instead of silently consuming its standard input.
fn prompt(what: &str) -> Result<String, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "no password given and standard input is not a terminal (use user:password)".into(),
        ));
    }
    eprint!("{what}");
    let _ = std::io::stderr().flush();
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
    };
    let _ = stty("-echo");
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    let _ = stty("echo");
    eprintln!();
    read.map_err(|e| CliError::Usage(format!("cannot read the password: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user: USER or USER:PASSWORD (asks for the password when missing).
    Add { user: String },
    /// Show a user and its roles.
    Get { user: String },
    /// List the user names.
    List,
    /// Remove a user.
    Remove { user: String },
    /// Grant roles to a user.
    Grant(UserRoles),
    /// Revoke roles from a user.
    Revoke(UserRoles),
    /// Change a user's password (asked for on the terminal).
    Passwd { user: String },
}

#[derive(Debug, Args)]
pub struct UserRoles {
    pub user: String,
    /// Roles to grant or revoke (repeat the flag or separate with commas).
    #[arg(long, value_delimiter = ',', required = true)]
    pub roles: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Add a role (no permissions).
    Add { role: String },
    /// Show a role's key permissions.
    Get { role: String },
    /// List the role names.
    List,
    /// Remove a role.
    Remove { role: String },
    /// Grant a key path (`/foo/*` for a subtree) to a role.
    Grant(RolePath),
    /// Revoke a key path from a role.
    Revoke(RolePath),
}

#[derive(Debug, Args)]
pub struct RolePath {
    pub role: String,
    /// Key path, `*` at the end for everything below.
    #[arg(long)]
    pub path: Option<String>,
    #[arg(long)]
    pub read: bool,
    #[arg(long)]
    pub write: bool,
    #[arg(long, alias = "rw")]
    pub readwrite: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Turn auth on (needs a root user).
    Enable,
    /// Turn auth off.
    Disable,
}

/// etcdctl's auth commands print the server's message and exit 1 on any refusal.
fn refusal(e: CliError) -> CliError {
    match e {
        CliError::Server { message, .. } => CliError::Refused(message),
        CliError::Etcd(e, _) => CliError::Refused(e.message),
        other => other,
    }
}

async fn call(
    c: &mut Client,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, CliError> {
    let body = body.map(|b| ("application/json", Bytes::from(b.to_string())));
    let t = Some(c.timeout());
    let resp = c.request(method, path, body, t).await?;
    json_response(resp).map(|(_, v)| v).map_err(refusal)
}

fn user_path(u: &str) -> String {
    format!("/v2/auth/users/{}", encode(u, false))
}

fn role_path(r: &str) -> String {
    format!("/v2/auth/roles/{}", encode(r, false))
}

fn need(name: &str, what: &str) -> Result<(), CliError> {
    if name.is_empty() {
        return Err(CliError::Refused(format!("Please provide a {what}")));
    }
    Ok(())
}

pub async fn user(c: &mut Client, cmd: UserCommand, out: Output) -> Result<(), CliError> {
    match cmd {
        UserCommand::Add { user } => {
            let (name, password) = match user.split_once(':') {
                Some((u, p)) => (u.to_string(), p.to_string()),
                None => (user.clone(), prompt("New password: ")?),
            };
            need(&name, "username")?;
            let body = serde_json::json!({"user": name, "password": password});
            call(c, Method::PUT, &user_path(&name), Some(body)).await?;
            println!("User {name} created");
        }
        UserCommand::Get { user } => {
            need(&user, "username")?;
            let v = call(c, Method::GET, &user_path(&user), None).await?;
            if out == Output::Json {
                println!("{v}");
                return Ok(());
            }
            #[derive(Deserialize)]
            struct Named {
                role: String,
            }
            #[derive(Deserialize)]
            struct U {
                user: String,
                #[serde(default)]
                roles: Vec<Named>,
            }
            let u: U = serde_json::from_value(v).map_err(|e| CliError::Protocol(e.to_string()))?;
            let names: Vec<String> = u.roles.into_iter().map(|r| r.role).collect();
            println!("User: {}", u.user);
            // etcdctl's exact bytes: one extra space per role before the list.
            println!("Roles: {}{}", " ".repeat(names.len()), names.join(" "));
        }
        UserCommand::List => {
            let v = call(c, Method::GET, "/v2/auth/users", None).await?;
            print_names(&v, "users", "user", out);
        }
        UserCommand::Remove { user } => {
            need(&user, "username")?;
            call(c, Method::DELETE, &user_path(&user), None).await?;
            println!("User {user} removed");
        }
        UserCommand::Grant(UserRoles { user, roles }) => {
            need(&user, "username")?;
            let body = serde_json::json!({"user": user, "grant": roles});
            call(c, Method::PUT, &user_path(&user), Some(body)).await?;
            println!("User {user} updated");
        }
        UserCommand::Revoke(UserRoles { user, roles }) => {
            need(&user, "username")?;
            let body = serde_json::json!({"user": user, "revoke": roles});
            call(c, Method::PUT, &user_path(&user), Some(body)).await?;
            println!("User {user} updated");
        }
        UserCommand::Passwd { user } => {
            need(&user, "username")?;
            let password = prompt("New password: ")?;
            let body = serde_json::json!({"user": user, "password": password});
            call(c, Method::PUT, &user_path(&user), Some(body)).await?;
            println!("Password updated");
        }
    }
    Ok(())
}

fn print_names(v: &serde_json::Value, list: &str, field: &str, out: Output) {
    if out == Output::Json {
        println!("{v}");
        return;
    }
    for item in v.get(list).and_then(|l| l.as_array()).into_iter().flatten() {
        if let Some(name) = item.get(field).and_then(|n| n.as_str()) {
            println!("{name}");
        }
    }
}

pub async fn role(c: &mut Client, cmd: RoleCommand, out: Output) -> Result<(), CliError> {
    match cmd {
        RoleCommand::Add { role } => {
            need(&role, "role name")?;
            // etcdctl looks first and words the refusal its own way.
            if call(c, Method::GET, &role_path(&role), None).await.is_ok() {
                return Err(CliError::Refused(format!("Role {role} already exists")));
            }
            let body = serde_json::json!({"role": role});
            call(c, Method::PUT, &role_path(&role), Some(body)).await?;
            println!("Role {role} created");
        }
        RoleCommand::Get { role } => {
            need(&role, "role name")?;
            let v = call(c, Method::GET, &role_path(&role), None).await?;
            if out == Output::Json {
                println!("{v}");
                return Ok(());
            }
            let list = |which: &str| -> Vec<String> {
                v.pointer(&format!("/permissions/kv/{which}"))
                    .and_then(|l| l.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            };
            println!("Role: {role}");
            println!("KV Read:");
            for p in list("read") {
                println!("\t{p}");
            }
            println!("KV Write:");
            for p in list("write") {
                println!("\t{p}");
            }
        }
        RoleCommand::List => {
            let v = call(c, Method::GET, "/v2/auth/roles", None).await?;
            print_names(&v, "roles", "role", out);
        }
        RoleCommand::Remove { role } => {
            need(&role, "role name")?;
            call(c, Method::DELETE, &role_path(&role), None).await?;
            println!("Role {role} removed");
        }
        RoleCommand::Grant(p) => change_role(c, p, "grant").await?,
        RoleCommand::Revoke(p) => change_role(c, p, "revoke").await?,
    }
    Ok(())
}

async fn change_role(c: &mut Client, p: RolePath, verb: &str) -> Result<(), CliError> {
    need(&p.role, "role name")?;
    let Some(path) = p.path.filter(|s| !s.is_empty()) else {
        return Err(CliError::Refused(
            "No path specified; please use `--path`".into(),
        ));
    };
    let (read, write) = match (p.read, p.write, p.readwrite) {
        (true, false, false) => (vec![path], vec![]),
        (false, true, false) => (vec![], vec![path]),
        (false, false, true) => (vec![path.clone()], vec![path]),
        _ => {
            return Err(CliError::Refused(
                "Please specify exactly one of --read, --write or --readwrite".into(),
            ))
        }
    };
    let body = serde_json::json!({"role": p.role, verb: {"kv": {"read": read, "write": write}}});
    call(c, Method::PUT, &role_path(&p.role), Some(body)).await?;
    println!("Role {} updated", p.role);
    Ok(())
}

pub async fn auth(c: &mut Client, cmd: AuthCommand) -> Result<(), CliError> {
    let (method, done) = match cmd {
        AuthCommand::Enable => (Method::PUT, "Authentication Enabled"),
        AuthCommand::Disable => (Method::DELETE, "Authentication Disabled"),
    };
    call(c, method, "/v2/auth/enable", None).await?;
    println!("{done}");
    Ok(())
}
