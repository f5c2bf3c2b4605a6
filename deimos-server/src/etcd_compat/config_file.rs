//! etcd's YAML `--config-file`: the flags it stands for. As in etcd, a config file replaces
//! every other flag and environment variable (the caller parses its arguments alone).

use std::ffi::OsString;

use clap::Command;

use super::flag_arg;

/// An etcd YAML config file that cannot stand for flags.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("config file: {0}")]
    Yaml(#[from] yaml_serde::Error),
    #[error("config file: expected a YAML mapping of flag names to values")]
    NotMapping,
    #[error("config file: key {0} is not a string")]
    KeyNotString(String),
    #[error("config file: a key under {section} is not a string: {key}")]
    SectionKeyNotString { section: String, key: String },
    #[error("config file: {section} must be a mapping, not {value}")]
    SectionNotMapping { section: String, value: String },
    #[error("config file: {key}: {value} in a list")]
    ListItem { key: String, value: String },
    #[error("config file: {key}: unsupported value {value}")]
    Value { key: String, value: String },
}

/// The arguments an etcd YAML config file stands for. Keys are flag names; the two
/// `*-transport-security` sections hold the TLS flags (the peer one with a `peer-` prefix);
/// lists become comma-separated values; empty and null values are left out. Keys that are no
/// flag here are reported in the second list, as etcd ignores them too.
pub fn args_from_config_file(
    cmd: &Command,
    text: &str,
) -> Result<(Vec<OsString>, Vec<String>), ConfigFileError> {
    let doc: yaml_serde::Value = yaml_serde::from_str(text)?;
    let yaml_serde::Value::Mapping(map) = doc else {
        return Err(ConfigFileError::NotMapping);
    };
    let mut pairs: Vec<(String, yaml_serde::Value)> = Vec::new();
    for (k, v) in map {
        let Some(k) = k.as_str().map(str::to_string) else {
            return Err(ConfigFileError::KeyNotString(format!("{k:?}")));
        };
        let prefix = match k.as_str() {
            "client-transport-security" => Some(""),
            "peer-transport-security" => Some("peer-"),
            _ => None,
        };
        match (prefix, v) {
            (Some(p), yaml_serde::Value::Mapping(inner)) => {
                for (ik, iv) in inner {
                    let ik = ik
                        .as_str()
                        .ok_or_else(|| ConfigFileError::SectionKeyNotString {
                            section: k.clone(),
                            key: format!("{ik:?}"),
                        })?;
                    pairs.push((format!("{p}{ik}"), iv));
                }
            }
            (Some(_), yaml_serde::Value::Null) => {}
            (Some(_), other) => {
                return Err(ConfigFileError::SectionNotMapping {
                    section: k,
                    value: format!("{other:?}"),
                });
            }
            (None, v) => pairs.push((k, v)),
        }
    }
    let mut args = Vec::new();
    let mut unknown = Vec::new();
    for (key, value) in pairs {
        let Some(arg) = cmd.get_arguments().find(|a| {
            a.get_long() == Some(key.as_str())
                || a.get_all_aliases()
                    .is_some_and(|al| al.contains(&key.as_str()))
        }) else {
            unknown.push(key);
            continue;
        };
        let text = match value {
            yaml_serde::Value::Null => continue,
            yaml_serde::Value::Bool(b) => b.to_string(),
            yaml_serde::Value::Number(n) => n.to_string(),
            yaml_serde::Value::String(s) => s,
            yaml_serde::Value::Sequence(items) => {
                let mut parts = Vec::new();
                for i in items {
                    match i {
                        yaml_serde::Value::String(s) => parts.push(s),
                        yaml_serde::Value::Number(n) => parts.push(n.to_string()),
                        other => {
                            return Err(ConfigFileError::ListItem {
                                key,
                                value: format!("{other:?}"),
                            })
                        }
                    }
                }
                parts.join(",")
            }
            other => {
                return Err(ConfigFileError::Value {
                    key,
                    value: format!("{other:?}"),
                })
            }
        };
        if text.is_empty() {
            continue;
        }
        if let Some(a) = flag_arg(arg, &text) {
            args.push(a);
        }
    }
    Ok((args, unknown))
}
