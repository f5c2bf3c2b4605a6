//! etcd v2 auth state: users, roles with key-prefix permissions, and the enabled flag, as a
//! deterministic part of the replicated state machine.
//!
//! Why here and not in the server: every change is a Raft proposal ([`AuthOp`]) whose checks
//! (exists, duplicate grant, root rules) run at apply time, so two concurrent changes are
//! ordered by the log and never lose each other's effect — a read-modify-write in the server
//! would. Passwords arrive here only as password hashes (the server hashes before proposing), so
//! no password is ever in the Raft log, a snapshot or the database.
//!
//! Semantics follow etcd 2.x (`etcdserver/api/v2auth`): the `root` role is built in (read and
//! write on `/*`) and cannot be changed; the `root` user always holds it; enabling needs a `root`
//! user and creates a `guest` role (read/write `/*`) if there is none; the guest role is what a
//! request without credentials gets while auth is on. Records live under their own prefix beside
//! the key space's, so they are written in the same transaction as the applied index and travel
//! in snapshots like every other record.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub const ROOT: &str = "root";
pub const GUEST: &str = "guest";

/// Every auth record starts with this (see `machine.rs` for the other prefixes).
pub(crate) const AUTH_PREFIX: &str = "\u{1}auth/";
const ENABLED_KEY: &str = "\u{1}auth/enabled";
const USER_PREFIX: &str = "\u{1}auth/user/";
const ROLE_PREFIX: &str = "\u{1}auth/role/";

/// Read and write key patterns. `None` and `Some([])` differ on the wire (`null` vs `[]`) and
/// etcd shows which one a role holds, so both are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RwPerm {
    #[serde(default)]
    pub read: Option<Vec<String>>,
    #[serde(default)]
    pub write: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(default)]
    pub kv: RwPerm,
}

impl Permissions {
    fn is_empty(&self) -> bool {
        self.kv.read.as_ref().is_none_or(Vec::is_empty)
            && self.kv.write.as_ref().is_none_or(Vec::is_empty)
    }

    fn all() -> Permissions {
        Permissions {
            kv: RwPerm {
                read: Some(vec!["/*".into()]),
                write: Some(vec!["/*".into()]),
            },
        }
    }
}

/// A role as etcd's JSON shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub role: String,
    #[serde(default)]
    pub permissions: Permissions,
}

impl Role {
    fn root() -> Role {
        Role {
            role: ROOT.into(),
            permissions: Permissions::all(),
        }
    }

    /// Whether this role may read (or write) `key`; `recursive` asks for the whole subtree, which
    /// only a pattern ending in `*` grants (etcd's `HasRecursiveAccess`).
    pub fn allows(&self, key: &str, write: bool, recursive: bool) -> bool {
        if self.role == ROOT {
            return true;
        }
        let list = if write {
            &self.permissions.kv.write
        } else {
            &self.permissions.kv.read
        };
        list.iter()
            .flatten()
            .any(|pat| match pat.strip_suffix('*') {
                Some(prefix) => key.starts_with(prefix),
                None => !recursive && key == pat,
            })
    }
}

/// A stored user: the password only as a hash (bcrypt, see the server's `auth.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub user: String,
    pub password_hash: String,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

impl User {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().flatten().any(|r| r == role)
    }
}

/// One replicated auth change. Password fields are hashes; `None` means none was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthOp {
    CreateUser {
        user: String,
        hash: Option<String>,
        roles: Option<Vec<String>>,
    },
    /// A `PUT` with neither roles nor grant/revoke: an update if the user exists, else a create.
    CreateOrUpdateUser {
        user: String,
        hash: Option<String>,
    },
    UpdateUser {
        user: String,
        hash: Option<String>,
        grant: Vec<String>,
        revoke: Vec<String>,
    },
    DeleteUser(String),
    CreateRole(Role),
    UpdateRole {
        role: String,
        grant: Option<Permissions>,
        revoke: Option<Permissions>,
    },
    DeleteRole(String),
    Enable,
    Disable,
}

/// A refused auth change: etcd's HTTP status and `{"message": ...}` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    pub status: u16,
    pub message: String,
}

fn err(status: u16, message: String) -> AuthError {
    AuthError {
        status,
        message: format!("auth: {message}"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthReply {
    User { user: User, created: bool },
    Role(Role),
    Done,
}

/// Records to write (`Some`) or delete (`None`) in the applying batch.
pub type Mutations = Vec<(String, Option<Vec<u8>>)>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthState {
    enabled: bool,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
}

impl AuthState {
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A user as etcd returns it: `root` always holds the root role.
    pub fn user(&self, name: &str) -> Option<User> {
        let mut u = self.users.get(name)?.clone();
        if u.user == ROOT && !u.has_role(ROOT) {
            u.roles.get_or_insert_with(Vec::new).push(ROOT.into());
        }
        Some(u)
    }

    pub fn user_names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    pub fn role(&self, name: &str) -> Option<Role> {
        if name == ROOT {
            return Some(Role::root());
        }
        self.roles.get(name).cloned()
    }

    /// Every role name, the built-in root role included, sorted.
    pub fn role_names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = self.roles.keys().cloned().collect();
        names.insert(ROOT.into());
        names.into_iter().collect()
    }

    /// A stored user by reference (the root role is not attached: see [`AuthState::user`]).
    /// What the per-request checks use, so that they copy nothing.
    pub fn user_ref(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Whether `user` (already authenticated; `None` for a request without credentials, which
    /// gets the guest role) may access `key`.
    pub fn may_access(&self, user: Option<&str>, key: &str, write: bool, recursive: bool) -> bool {
        match user {
            None => self
                .roles
                .get(GUEST)
                // etcd checks the guest role without the recursive rule.
                .is_some_and(|r| r.allows(key, write, false)),
            Some(name) => self.users.get(name).is_some_and(|u| {
                // The root role (always the root user's) allows everything.
                holds_root(u)
                    || u.roles
                        .iter()
                        .flatten()
                        .filter_map(|r| self.roles.get(r))
                        .any(|r| r.allows(key, write, recursive))
            }),
        }
    }

    /// Whether `user` holds the root role (what every auth and membership change needs).
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(holds_root)
    }

    /// Apply one change; the records it touched are appended to `mutations`.
    pub fn apply(&mut self, op: AuthOp, mutations: &mut Mutations) -> Result<AuthReply, AuthError> {
        match op {
            AuthOp::CreateUser { user, hash, roles } => {
                self.create_user(user, hash, roles, mutations)
            }
            AuthOp::CreateOrUpdateUser { user, hash } => {
                if self.users.contains_key(&user) {
                    self.update_user(user, hash, Vec::new(), Vec::new(), mutations)
                } else {
                    self.create_user(user, hash, None, mutations)
                }
            }
            AuthOp::UpdateUser {
                user,
                hash,
                grant,
                revoke,
            } => self.update_user(user, hash, grant, revoke, mutations),
            AuthOp::DeleteUser(name) => {
                if self.enabled && name == ROOT {
                    return Err(err(
                        403,
                        "Cannot delete root user while auth is enabled.".into(),
                    ));
                }
                if self.users.remove(&name).is_none() {
                    return Err(err(404, format!("User {name} does not exist")));
                }
                mutations.push((format!("{USER_PREFIX}{name}"), None));
                Ok(AuthReply::Done)
            }
            AuthOp::CreateRole(role) => {
                refuse_root_role(&role.role)?;
                if self.roles.contains_key(&role.role) {
                    return Err(err(409, format!("Role {} already exists.", role.role)));
                }
                self.put_role(role.clone(), mutations);
                Ok(AuthReply::Role(role))
            }
            AuthOp::UpdateRole {
                role,
                grant,
                revoke,
            } => {
                refuse_root_role(&role)?;
                let Some(old) = self.roles.get(&role) else {
                    return Err(err(404, format!("Role {role} doesn't exist.")));
                };
                let mut new = old.clone();
                if let Some(g) = grant {
                    new.permissions.kv.read =
                        Some(granted(&old.permissions.kv.read, g.kv.read, "read")?);
                    new.permissions.kv.write =
                        Some(granted(&old.permissions.kv.write, g.kv.write, "write")?);
                }
                if let Some(r) = revoke {
                    new.permissions.kv.read = Some(revoked(&new.permissions.kv.read, r.kv.read));
                    new.permissions.kv.write = Some(revoked(&new.permissions.kv.write, r.kv.write));
                }
                if &new == old {
                    return Err(err(
                        400,
                        "Role not updated. Use grant/revoke to update the role.".into(),
                    ));
                }
                self.put_role(new.clone(), mutations);
                Ok(AuthReply::Role(new))
            }
            AuthOp::DeleteRole(name) => {
                refuse_root_role(&name)?;
                if self.roles.remove(&name).is_none() {
                    return Err(err(404, format!("Role {name} doesn't exist.")));
                }
                mutations.push((format!("{ROLE_PREFIX}{name}"), None));
                Ok(AuthReply::Done)
            }
            AuthOp::Enable => {
                if self.enabled {
                    return Err(err(409, "already enabled".into()));
                }
                if !self.users.contains_key(ROOT) {
                    return Err(err(409, "No root user available, please create one".into()));
                }
                if !self.roles.contains_key(GUEST) {
                    self.put_role(
                        Role {
                            role: GUEST.into(),
                            permissions: Permissions::all(),
                        },
                        mutations,
                    );
                }
                self.set_enabled(true, mutations);
                Ok(AuthReply::Done)
            }
            AuthOp::Disable => {
                if !self.enabled {
                    return Err(err(409, "already disabled".into()));
                }
                self.set_enabled(false, mutations);
                Ok(AuthReply::Done)
            }
        }
    }

    fn create_user(
        &mut self,
        name: String,
        hash: Option<String>,
        roles: Option<Vec<String>>,
        mutations: &mut Mutations,
    ) -> Result<AuthReply, AuthError> {
        let Some(hash) = hash else {
            return Err(err(
                400,
                format!("Cannot create user {name} with an empty password"),
            ));
        };
        if self.users.contains_key(&name) {
            return Err(err(409, format!("User {name} already exists.")));
        }
        let mut user = User {
            user: name,
            password_hash: hash,
            roles,
        };
        if user.user == ROOT && !user.has_role(ROOT) {
            user.roles.get_or_insert_with(Vec::new).push(ROOT.into());
        }
        self.put_user(user.clone(), mutations);
        Ok(AuthReply::User {
            user,
            created: true,
        })
    }

    fn update_user(
        &mut self,
        name: String,
        hash: Option<String>,
        grant: Vec<String>,
        revoke: Vec<String>,
        mutations: &mut Mutations,
    ) -> Result<AuthReply, AuthError> {
        let Some(old) = self.user(&name) else {
            return Err(err(404, format!("User {name} doesn't exist.")));
        };
        let mut roles: BTreeSet<String> = old.roles.iter().flatten().cloned().collect();
        for g in grant {
            if !roles.insert(g.clone()) {
                return Err(err(
                    409,
                    format!("Granting duplicate role {g} for user {name}"),
                ));
            }
        }
        for r in revoke {
            if !roles.remove(&r) {
                return Err(err(
                    409,
                    format!("Revoking ungranted role {r} for user {name}"),
                ));
            }
        }
        let new = User {
            user: name,
            password_hash: hash.unwrap_or_else(|| old.password_hash.clone()),
            roles: Some(roles.into_iter().collect()),
        };
        if new == old {
            return Err(err(
                400,
                "User not updated. Use grant/revoke/password to update the user.".into(),
            ));
        }
        self.put_user(new.clone(), mutations);
        Ok(AuthReply::User {
            user: new,
            created: false,
        })
    }

    fn put_user(&mut self, user: User, mutations: &mut Mutations) {
        mutations.push((format!("{USER_PREFIX}{}", user.user), Some(to_json(&user))));
        self.users.insert(user.user.clone(), user);
    }

    fn put_role(&mut self, role: Role, mutations: &mut Mutations) {
        mutations.push((format!("{ROLE_PREFIX}{}", role.role), Some(to_json(&role))));
        self.roles.insert(role.role.clone(), role);
    }

    fn set_enabled(&mut self, on: bool, mutations: &mut Mutations) {
        self.enabled = on;
        mutations.push((ENABLED_KEY.into(), Some(vec![u8::from(on)])));
    }

    /// Rebuild from one stored record (called for each record under [`AUTH_PREFIX`]).
    pub(crate) fn load_record(&mut self, key: &str, value: &[u8]) -> Result<(), RecordError> {
        let bad = |source| RecordError::Json {
            key: key.to_string(),
            source,
        };
        if key == ENABLED_KEY {
            self.enabled = value.first() == Some(&1);
        } else if key.starts_with(USER_PREFIX) {
            let u: User = serde_json::from_slice(value).map_err(bad)?;
            self.users.insert(u.user.clone(), u);
        } else if key.starts_with(ROLE_PREFIX) {
            let r: Role = serde_json::from_slice(value).map_err(bad)?;
            self.roles.insert(r.role.clone(), r);
        } else {
            return Err(RecordError::Unknown(key.to_string()));
        }
        Ok(())
    }
}

/// A stored auth record that cannot be loaded: the state on disk is not what was written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("auth record {key:?}: {source}")]
    Json {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("unknown auth record {0:?}")]
    Unknown(String),
}

fn holds_root(u: &User) -> bool {
    u.user == ROOT || u.has_role(ROOT)
}

fn refuse_root_role(name: &str) -> Result<(), AuthError> {
    if name == ROOT {
        return Err(err(
            403,
            format!("Cannot modify role {name}: is root role."),
        ));
    }
    Ok(())
}

fn granted(
    old: &Option<Vec<String>>,
    add: Option<Vec<String>>,
    what: &str,
) -> Result<Vec<String>, AuthError> {
    let mut set: BTreeSet<String> = old.iter().flatten().cloned().collect();
    for p in add.into_iter().flatten() {
        if !set.insert(p.clone()) {
            return Err(err(
                409,
                format!("Granting duplicate {what} permission {p}"),
            ));
        }
    }
    Ok(set.into_iter().collect())
}

/// Revoking a permission the role does not hold is not an error in etcd: it is skipped.
fn revoked(old: &Option<Vec<String>>, remove: Option<Vec<String>>) -> Vec<String> {
    let mut set: BTreeSet<String> = old.iter().flatten().cloned().collect();
    for p in remove.into_iter().flatten() {
        set.remove(&p);
    }
    set.into_iter().collect()
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("auth records always serialise")
}

/// Whether a role's permissions ask for nothing (etcd treats such a grant/revoke as absent).
pub fn perms_empty(p: &Option<Permissions>) -> bool {
    p.as_ref().is_none_or(Permissions::is_empty)
}

#[cfg(test)]
mod tests;
