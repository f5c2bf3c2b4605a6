//! `/v2/auth`: users, roles and the auth switch, with etcd 2.x's paths, JSON shapes, statuses
//! and messages (`{"message": ...}` errors). Changes are Raft proposals ([`AuthOp`]) checked at
//! apply time; reads come from this member's applied state, as etcd's (non-quorum) auth reads.
//! Passwords are hashed here, before proposing, on a blocking thread: bcrypt is slow on purpose.

use std::sync::Arc;

use deimos_store::auth::{perms_empty, AuthOp, AuthReply, AuthState, Permissions, Role};
use deimos_store::machine::{Output, Proposal};
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde::{Deserialize, Serialize};

use super::auth::{check_root, message, refused, BCRYPT_COST};
use super::response::{self, Resp};
use crate::node::App;

/// Largest auth request body read (a user or role is a few hundred bytes).
const MAX_BODY: usize = 64 << 10;

/// Route `p` (the path after `/v2`, starting `/auth`).
pub async fn handle(app: Arc<App>, req: Request<Incoming>, p: &str) -> Resp {
    let clean = p.trim_end_matches('/');
    let pieces: Vec<&str> = clean.split('/').collect();
    // ["", "auth", what, name?]
    match pieces.as_slice() {
        ["", "auth", "enable"] if p == "/auth/enable" => enable(app, req).await,
        ["", "auth", what @ ("users" | "roles")] => {
            if !allow(&req, &[Method::GET]) {
                return not_allowed("GET");
            }
            if let Err(r) = check_root(&app, &req).await {
                return r;
            }
            let state = match app.auth.state().read() {
                Ok(s) => s.clone(),
                Err(_) => return message(500, "auth state unavailable"),
            };
            if *what == "users" {
                list_users(&state)
            } else {
                list_roles(&state)
            }
        }
        ["", "auth", "users" | "roles", ..] if pieces.len() != 4 => message(400, "Invalid path"),
        ["", "auth", what @ ("users" | "roles"), name] => {
            if !allow(&req, &[Method::GET, Method::PUT, Method::DELETE]) {
                return not_allowed("GET,PUT,DELETE");
            }
            if let Err(r) = check_root(&app, &req).await {
                return r;
            }
            // etcd matches the decoded path: `a%20b` is user `a b`, and `%2F` splits it.
            let name = match percent_encoding::percent_decode_str(name).decode_utf8() {
                Ok(n) if !n.contains('/') => n.into_owned(),
                _ => return message(400, "Invalid path"),
            };
            if *what == "users" {
                user(app, req, name).await
            } else {
                role(app, req, name).await
            }
        }
        _ => response::text(404, "404 page not found\n"),
    }
}

fn allow(req: &Request<Incoming>, methods: &[Method]) -> bool {
    methods.contains(req.method())
}

fn not_allowed(allow: &'static str) -> Resp {
    let mut r = response::text(405, "Method Not Allowed\n");
    r.headers_mut()
        .insert(hyper::header::ALLOW, http::HeaderValue::from_static(allow));
    r
}

async fn enable(app: Arc<App>, req: Request<Incoming>) -> Resp {
    if !allow(&req, &[Method::GET, Method::PUT, Method::DELETE]) {
        return not_allowed("GET,PUT,DELETE");
    }
    let op = match *req.method() {
        Method::PUT => AuthOp::Enable,
        Method::DELETE => AuthOp::Disable,
        _ => {
            return response::json(
                200,
                &deimos_api::cluster::AuthStatus {
                    enabled: app.auth.enabled(),
                },
            )
        }
    };
    if let Err(r) = check_root(&app, &req).await {
        return r;
    }
    match propose(&app, op).await {
        Ok(_) => empty_json(200),
        Err(r) => r,
    }
}

/// etcd's user as listed: the roles resolved to role objects, omitted when there are none.
#[derive(Serialize)]
struct UserWithRoles {
    user: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roles: Vec<Role>,
}

/// etcd's user as a change returns it: the role names (`null` when never set), no password.
#[derive(Serialize)]
struct UserOut<'a> {
    user: &'a str,
    roles: &'a Option<Vec<String>>,
}

fn list_users(state: &AuthState) -> Resp {
    let users: Vec<UserWithRoles> = state
        .user_names()
        .filter_map(|n| state.user(n))
        .map(|u| UserWithRoles {
            roles: u
                .roles
                .iter()
                .flatten()
                .filter_map(|r| state.role(r))
                .collect(),
            user: u.user,
        })
        .collect();
    #[derive(Serialize)]
    struct Users {
        users: Option<Vec<UserWithRoles>>,
    }
    // No users at all is `null`, as etcd's nil slice.
    let users = (!users.is_empty()).then_some(users);
    response::json(200, &Users { users })
}

fn list_roles(state: &AuthState) -> Resp {
    let roles: Vec<Role> = state
        .role_names()
        .iter()
        .filter_map(|r| state.role(r))
        .collect();
    #[derive(Serialize)]
    struct Roles {
        roles: Vec<Role>,
    }
    response::json(200, &Roles { roles })
}

#[derive(Deserialize)]
struct UserIn {
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    grant: Option<Vec<String>>,
    #[serde(default)]
    revoke: Option<Vec<String>>,
}

async fn user(app: Arc<App>, req: Request<Incoming>, name: String) -> Resp {
    match *req.method() {
        Method::GET => {
            let Ok(state) = app.auth.state().read().map(|s| s.clone()) else {
                return message(500, "auth state unavailable");
            };
            let Some(u) = state.user(&name) else {
                return message(404, &format!("auth: User {name} does not exist."));
            };
            let mut roles = Vec::new();
            for r in u.roles.iter().flatten() {
                match state.role(r) {
                    Some(role) => roles.push(role),
                    None => return message(404, &format!("auth: Role {r} does not exist.")),
                }
            }
            response::json(
                200,
                &UserWithRoles {
                    user: u.user,
                    roles,
                },
            )
        }
        Method::DELETE => match propose(&app, AuthOp::DeleteUser(name)).await {
            Ok(_) => empty_json(200),
            Err(r) => r,
        },
        _ => {
            let u: UserIn = match read_json(req).await {
                Ok(u) => u,
                Err(r) => return r,
            };
            if u.user != name {
                return message(400, "User JSON name does not match the name in the URL");
            }
            let hash = match hash_password(u.password).await {
                Ok(h) => h,
                Err(r) => return r,
            };
            let grant = u.grant.unwrap_or_default();
            let revoke = u.revoke.unwrap_or_default();
            let has_roles = u.roles.as_ref().is_some_and(|r| !r.is_empty());
            let op = if grant.is_empty() && revoke.is_empty() {
                if has_roles {
                    AuthOp::CreateUser {
                        user: name,
                        hash,
                        roles: u.roles,
                    }
                } else {
                    AuthOp::CreateOrUpdateUser { user: name, hash }
                }
            } else if has_roles {
                return message(400, "User JSON contains both roles and grant/revoke");
            } else {
                AuthOp::UpdateUser {
                    user: name,
                    hash,
                    grant,
                    revoke,
                }
            };
            match propose(&app, op).await {
                // etcd answers 201 only for a create through the create-or-update path.
                Ok(AuthReply::User { user, created }) => {
                    let status = if created && !has_roles { 201 } else { 200 };
                    response::json(
                        status,
                        &UserOut {
                            user: &user.user,
                            roles: &user.roles,
                        },
                    )
                }
                Ok(_) => message(500, "unexpected apply result"),
                Err(r) => r,
            }
        }
    }
}

#[derive(Deserialize)]
struct RoleIn {
    role: String,
    #[serde(default)]
    permissions: Permissions,
    #[serde(default)]
    grant: Option<Permissions>,
    #[serde(default)]
    revoke: Option<Permissions>,
}

async fn role(app: Arc<App>, req: Request<Incoming>, name: String) -> Resp {
    match *req.method() {
        Method::GET => match app.auth.state().read().ok().and_then(|s| s.role(&name)) {
            Some(r) => response::json(200, &r),
            None => message(404, &format!("auth: Role {name} does not exist.")),
        },
        Method::DELETE => match propose(&app, AuthOp::DeleteRole(name)).await {
            Ok(_) => empty_json(200),
            Err(r) => r,
        },
        _ => {
            let r: RoleIn = match read_json(req).await {
                Ok(r) => r,
                Err(r) => return r,
            };
            if r.role != name {
                return message(400, "Role JSON name does not match the name in the URL");
            }
            if perms_empty(&r.grant) && perms_empty(&r.revoke) {
                let role = Role {
                    role: name,
                    permissions: r.permissions,
                };
                return match propose(&app, AuthOp::CreateRole(role)).await {
                    Ok(AuthReply::Role(role)) => response::json(201, &role),
                    Ok(_) => message(500, "unexpected apply result"),
                    Err(r) => r,
                };
            }
            if !perms_empty(&Some(r.permissions)) {
                return message(400, "Role JSON contains both permissions and grant/revoke");
            }
            let op = AuthOp::UpdateRole {
                role: name,
                grant: r.grant,
                revoke: r.revoke,
            };
            match propose(&app, op).await {
                Ok(AuthReply::Role(role)) => response::json(200, &role),
                Ok(_) => message(500, "unexpected apply result"),
                Err(r) => r,
            }
        }
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Resp> {
    let (_, body) = super::read_body(req, MAX_BODY).await?;
    serde_json::from_slice(&body).map_err(|_| message(400, "Invalid JSON in request body."))
}

/// bcrypt off the async threads; an empty password stays `None` (etcd refuses to create a user
/// without one, and an update without one keeps the old).
async fn hash_password(password: String) -> Result<Option<String>, Resp> {
    if password.is_empty() {
        return Ok(None);
    }
    match tokio::task::spawn_blocking(move || bcrypt::hash(password, BCRYPT_COST)).await {
        Ok(Ok(h)) => Ok(Some(h)),
        _ => Err(message(500, "cannot hash the password")),
    }
}

async fn propose(app: &App, op: AuthOp) -> Result<AuthReply, Resp> {
    match app.handle.propose(Proposal::Auth(op).encode()).await {
        Ok(Output::Auth(Ok(reply))) => Ok(reply),
        Ok(Output::Auth(Err(e))) => Err(message(e.status, &e.message)),
        Ok(Output::Invalid(why)) => Err(message(500, &why)),
        Ok(_) => Err(message(500, "unexpected apply result")),
        Err(e) => Err(message(500, &e.to_string())),
    }
}

/// etcd's enable/disable and deletes answer with a JSON content type and no body.
fn empty_json(status: u16) -> Resp {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(response::full(""))
        .unwrap_or_else(|_| refused())
}
