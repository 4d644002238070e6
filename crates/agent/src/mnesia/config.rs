//! `[mnesia]` settings (env `ERLKUBE_MNESIA_*`): the RAM tables to keep
//! replicated on every member and what to do after a netsplit. Pure.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use erlkube_discovery::config::{
    check_env_keys, env_name, parse_duration, ConfigError, Entry, Source,
};

use crate::config::AgentKey;

/// Every `[mnesia]` key.
pub const MNESIA_KEYS: &[AgentKey] = &[
    AgentKey {
        name: "mnesia.tables",
        default: None,
        doc: "RAM tables replicated on every member: name[:type[:attr/attr/...]] comma-separated (type set, ordered_set or bag; attributes default key/value); none: Mnesia is left alone",
    },
    AgentKey {
        name: "mnesia.partition_policy",
        default: Some("restart_minority"),
        doc: "after a netsplit (inconsistent_database): restart_minority (the smaller side restarts Mnesia and reloads from the larger; ties: the side holding the smallest node name stays) or log (report only)",
    },
    AgentKey {
        name: "mnesia.removal_grace",
        default: Some("60s"),
        doc: "a schema member that has left discovery and stayed disconnected this long is removed from the schema (never while a partition is suspected)",
    },
    AgentKey {
        name: "mnesia.join_timeout",
        default: Some("10m"),
        doc: "upper bound of one join step on the node (schema merge, table creation, adding the local replica with its copy of the data)",
    },
];

/// A table's type (`mnesia:create_table/2`'s `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableType {
    /// `set` (the default).
    Set,
    /// `ordered_set`.
    OrderedSet,
    /// `bag`.
    Bag,
}

impl TableType {
    /// Mnesia's atom.
    pub fn as_str(self) -> &'static str {
        match self {
            TableType::Set => "set",
            TableType::OrderedSet => "ordered_set",
            TableType::Bag => "bag",
        }
    }

    fn parse(s: &str) -> Option<TableType> {
        match s {
            "" | "set" => Some(TableType::Set),
            "ordered_set" => Some(TableType::OrderedSet),
            "bag" => Some(TableType::Bag),
            _ => None,
        }
    }
}

/// One configured RAM table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// The table's name (an atom).
    pub name: String,
    /// Its type.
    pub kind: TableType,
    /// Its attributes (at least two; the first is the key).
    pub attributes: Vec<String>,
}

impl fmt::Display for TableSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.name,
            self.kind.as_str(),
            self.attributes.join("/")
        )
    }
}

/// What to do on `inconsistent_database`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionPolicy {
    /// The smaller side restarts Mnesia and reloads from the larger.
    RestartMinority,
    /// Report only.
    Log,
}

impl PartitionPolicy {
    /// The configuration word.
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionPolicy::RestartMinority => "restart_minority",
            PartitionPolicy::Log => "log",
        }
    }
}

/// The resolved `[mnesia]` section (only when a table is configured).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MnesiaConfig {
    /// The tables, in the order given.
    pub tables: Vec<TableSpec>,
    /// After a netsplit.
    pub partition_policy: PartitionPolicy,
    /// How long a schema member must be gone (left discovery and
    /// disconnected) before it is removed from the schema.
    pub removal_grace: Duration,
    /// Bound of one join step.
    pub join_timeout: Duration,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// An Erlang atom that needs no quotes: `[a-z][A-Za-z0-9_@]*`.
fn plain_atom(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@')
}

const TABLES: &str = "mnesia.tables";

/// Parses one table of the text form `name[:type[:attr/attr/...]]`.
pub fn parse_table(text: &str) -> Result<TableSpec, ConfigError> {
    let mut parts = text.trim().splitn(3, ':');
    let name = parts.next().unwrap_or("").trim();
    let kind = parts.next().unwrap_or("").trim();
    let attrs = parts.next().map(|a| {
        a.split('/')
            .map(|s| s.trim().to_owned())
            .collect::<Vec<_>>()
    });
    table(name, kind, attrs)
}

fn table(name: &str, kind: &str, attrs: Option<Vec<String>>) -> Result<TableSpec, ConfigError> {
    if !plain_atom(name) || name == "schema" {
        return Err(invalid(
            TABLES,
            format!("table name {name:?} must be a plain atom (a lowercase letter, then letters, digits, _ or @) other than schema, as in \"cache\" or \"sessions:bag:id/user/at\""),
        ));
    }
    let kind = TableType::parse(kind).ok_or_else(|| {
        invalid(
            TABLES,
            format!("table {name}: type {kind:?} must be set, ordered_set or bag"),
        )
    })?;
    let attributes = attrs.unwrap_or_else(|| vec!["key".into(), "value".into()]);
    if attributes.len() < 2 {
        return Err(invalid(
            TABLES,
            format!("table {name}: needs at least two attributes (the key and a value), as in {name}:{}:key/value", kind.as_str()),
        ));
    }
    for (i, a) in attributes.iter().enumerate() {
        if !plain_atom(a) {
            return Err(invalid(
                TABLES,
                format!("table {name}: attribute {a:?} must be a plain atom (a lowercase letter, then letters, digits, _ or @)"),
            ));
        }
        if attributes[..i].contains(a) {
            return Err(invalid(
                TABLES,
                format!("table {name}: attribute {a} is given twice"),
            ));
        }
    }
    Ok(TableSpec {
        name: name.to_owned(),
        kind,
        attributes,
    })
}

/// The file's `tables`: a comma-separated string, or an array of strings
/// (`"sessions:bag:id/user/at"`) and inline tables (`{ name = "sessions",
/// type = "bag", attributes = ["id", "user", "at"] }`).
fn file_tables(v: &toml::Value) -> Result<Vec<TableSpec>, ConfigError> {
    let items = match v {
        toml::Value::String(s) => return text_tables(s),
        toml::Value::Array(a) => a,
        other => {
            return Err(invalid(
                TABLES,
                format!("must be a list of tables such as [\"cache\", \"sessions:bag:id/user/at\"], got {other}"),
            ))
        }
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            toml::Value::String(s) => out.push(parse_table(s)?),
            toml::Value::Table(t) => {
                for k in t.keys() {
                    if !["name", "type", "attributes"].contains(&k.as_str()) {
                        return Err(invalid(
                            TABLES,
                            format!("unknown table key {k:?}; known: name, type, attributes"),
                        ));
                    }
                }
                let s = |k: &str| match t.get(k) {
                    None => Ok(String::new()),
                    Some(toml::Value::String(s)) => Ok(s.clone()),
                    Some(other) => Err(invalid(
                        TABLES,
                        format!("table {k} must be a string, got {other}"),
                    )),
                };
                let attrs = match t.get("attributes") {
                    None => None,
                    Some(toml::Value::Array(a)) => Some(
                        a.iter()
                            .map(|v| match v {
                                toml::Value::String(s) => Ok(s.clone()),
                                other => Err(invalid(
                                    TABLES,
                                    format!("attributes must be strings, got {other}"),
                                )),
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                    ),
                    Some(other) => {
                        return Err(invalid(
                            TABLES,
                            format!("attributes must be a list of strings, got {other}"),
                        ))
                    }
                };
                out.push(table(&s("name")?, &s("type")?, attrs)?);
            }
            other => {
                return Err(invalid(
                    TABLES,
                    format!("each table is a string or an inline table, got {other}"),
                ))
            }
        }
    }
    Ok(out)
}

fn text_tables(s: &str) -> Result<Vec<TableSpec>, ConfigError> {
    s.split(',')
        .filter(|t| !t.trim().is_empty())
        .map(parse_table)
        .collect()
}

/// Resolves `[mnesia]` from the file's table (if any) and the environment
/// (env overrides file overrides default). `None` when no table is
/// configured (the agent leaves Mnesia alone). The entries are for
/// `--check` and the start-up log.
pub fn resolve(
    file: Option<toml::Value>,
    env: &BTreeMap<String, String>,
) -> Result<(Option<MnesiaConfig>, Vec<Entry>), ConfigError> {
    let names: Vec<&str> = MNESIA_KEYS.iter().map(|k| k.name).collect();
    check_env_keys(env.keys(), "ERLKUBE_MNESIA_", &names)?;
    let file = match file {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(invalid("mnesia", "must be a table ([mnesia])")),
    };
    for k in file.keys() {
        let full = format!("mnesia.{k}");
        if !names.contains(&full.as_str()) {
            return Err(ConfigError::Unknown {
                key: full,
                origin: "file".into(),
                known: names.join(", "),
            });
        }
    }
    let mut entries = Vec::new();
    let mut tables = Vec::new();
    let mut text = |key: &'static str| -> Result<Option<String>, ConfigError> {
        let short = key.trim_start_matches("mnesia.");
        let var = env_name(key);
        let spec = MNESIA_KEYS.iter().find(|k| k.name == key).unwrap();
        let (value, source) = if let Some(v) = env.get(&var).filter(|v| !v.is_empty()) {
            if key == TABLES {
                tables = text_tables(v)?;
            }
            (Some(v.clone()), Source::Env(var))
        } else if let Some(v) = file.get(short) {
            if key == TABLES {
                tables = file_tables(v)?;
                (
                    Some(
                        tables
                            .iter()
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    Source::File,
                )
            } else {
                match v {
                    toml::Value::String(s) => (Some(s.clone()), Source::File),
                    other => return Err(invalid(key, format!("must be a string, got {other}"))),
                }
            }
        } else {
            (spec.default.map(str::to_owned), Source::Default)
        };
        entries.push(Entry {
            key,
            value: value.clone(),
            source,
        });
        Ok(value)
    };
    text(TABLES)?;
    let policy = text("mnesia.partition_policy")?.unwrap_or_default();
    let grace = text("mnesia.removal_grace")?.unwrap_or_default();
    let join = text("mnesia.join_timeout")?.unwrap_or_default();
    let partition_policy = match policy.as_str() {
        "restart_minority" => PartitionPolicy::RestartMinority,
        "log" => PartitionPolicy::Log,
        other => {
            return Err(invalid(
                "mnesia.partition_policy",
                format!("must be restart_minority or log, got {other:?}"),
            ))
        }
    };
    let positive = |key: &str, v: &str| {
        parse_duration(v).filter(|d| !d.is_zero()).ok_or_else(|| {
            invalid(
                key,
                format!("must be a duration more than 0 like \"30s\" or \"2m\", got {v:?}"),
            )
        })
    };
    let removal_grace = positive("mnesia.removal_grace", &grace)?;
    let join_timeout = positive("mnesia.join_timeout", &join)?;
    for (i, t) in tables.iter().enumerate() {
        if tables[..i].iter().any(|o| o.name == t.name) {
            return Err(invalid(TABLES, format!("table {} is listed twice", t.name)));
        }
    }
    let config = (!tables.is_empty()).then_some(MnesiaConfig {
        tables,
        partition_policy,
        removal_grace,
        join_timeout,
    });
    Ok((config, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn off_without_tables() {
        let (c, entries) = resolve(None, &env(&[])).unwrap();
        assert!(c.is_none());
        assert_eq!(entries.len(), MNESIA_KEYS.len());
    }

    #[test]
    fn tables_from_env_with_types_and_attributes() {
        let (c, _) = resolve(
            None,
            &env(&[
                (
                    "ERLKUBE_MNESIA_TABLES",
                    "cache, sessions:bag:id/user/at,q:ordered_set",
                ),
                ("ERLKUBE_MNESIA_REMOVAL_GRACE", "5s"),
            ]),
        )
        .unwrap();
        let c = c.unwrap();
        assert_eq!(
            c.tables,
            vec![
                TableSpec {
                    name: "cache".into(),
                    kind: TableType::Set,
                    attributes: vec!["key".into(), "value".into()]
                },
                TableSpec {
                    name: "sessions".into(),
                    kind: TableType::Bag,
                    attributes: vec!["id".into(), "user".into(), "at".into()]
                },
                TableSpec {
                    name: "q".into(),
                    kind: TableType::OrderedSet,
                    attributes: vec!["key".into(), "value".into()]
                },
            ]
        );
        assert_eq!(c.partition_policy, PartitionPolicy::RestartMinority);
        assert_eq!(c.removal_grace, Duration::from_secs(5));
    }

    #[test]
    fn tables_from_the_file_as_strings_or_inline_tables() {
        let file: toml::Table = "tables = [\"cache\", { name = \"sessions\", type = \"bag\", attributes = [\"id\", \"user\"] }]\npartition_policy = \"log\"\n"
            .parse()
            .unwrap();
        let (c, entries) = resolve(Some(toml::Value::Table(file)), &env(&[])).unwrap();
        let c = c.unwrap();
        assert_eq!(c.tables.len(), 2);
        assert_eq!(c.tables[1].kind, TableType::Bag);
        assert_eq!(c.partition_policy, PartitionPolicy::Log);
        assert_eq!(
            entries[0].value.as_deref(),
            Some("cache:set:key/value,sessions:bag:id/user")
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("ERLKUBE_MNESIA_TABLES", "Cache", "mnesia.tables"),
            ("ERLKUBE_MNESIA_TABLES", "schema", "mnesia.tables"),
            ("ERLKUBE_MNESIA_TABLES", "c:hash", "mnesia.tables"),
            ("ERLKUBE_MNESIA_TABLES", "c:set:key", "mnesia.tables"),
            ("ERLKUBE_MNESIA_TABLES", "c:set:k/k", "mnesia.tables"),
            ("ERLKUBE_MNESIA_TABLES", "c,c:bag", "mnesia.tables"),
            (
                "ERLKUBE_MNESIA_PARTITION_POLICY",
                "heal",
                "mnesia.partition_policy",
            ),
            ("ERLKUBE_MNESIA_REMOVAL_GRACE", "0s", "mnesia.removal_grace"),
            ("ERLKUBE_MNESIA_JOIN_TIMEOUT", "soon", "mnesia.join_timeout"),
            ("ERLKUBE_MNESIA_TABLE", "x", "ERLKUBE_MNESIA_TABLE"),
        ];
        for (k, v, named) in cases {
            let mut e = env(&[("ERLKUBE_MNESIA_TABLES", "cache")]);
            e.insert(k.to_string(), v.to_string());
            let err = resolve(None, &e).unwrap_err().to_string();
            assert!(err.starts_with(named), "{k}={v}: {err}");
        }
        let file: toml::Table = "table = \"x\"\n".parse().unwrap();
        let err = resolve(Some(toml::Value::Table(file)), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("mnesia.table: unknown key"), "{err}");
    }
}
