//! What an operator does to the running system at set times: restarts Redis, creates,
//! changes and ends sales through the admin API, edits the config file and reloads it with
//! SIGHUP. Each action's outcome is kept, so that a refused one fails the run.

use std::time::{Duration, Instant, SystemTime};

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::stack::Stack;

/// Something done to the running system. (Unknown keys are refused by `Action`: serde
/// cannot deny them on a struct with a flattened field.)
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    /// When, from the crowd's start.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// What.
    #[serde(flatten)]
    pub action: Action,
}

/// The things an event can do.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// SIGKILL redis-server, keep it down for `down_for`, start it again on its data.
    RestartRedis {
        /// How long Redis stays down.
        #[serde(with = "humantime_serde")]
        down_for: Duration,
    },
    /// Create a sale, or change one, through instance `via`'s admin API as an operator's
    /// tool would: read it, set the keys of `sale` in what it read, write it back with
    /// `If-Match` on the version read.
    PutSale {
        /// The instance whose admin API takes it.
        #[serde(default)]
        via: usize,
        /// Keys of a `[[sale]]` (`sku` among them).
        sale: toml::Table,
        /// Sets `ends_at` this long after the event (a window changed mid-sale).
        #[serde(default, with = "humantime_serde")]
        ends_in: Option<Duration>,
    },
    /// End a sale through instance `via`'s admin API (`DELETE /admin/sales/{sku}`).
    EndSale {
        /// The instance whose admin API takes it.
        #[serde(default)]
        via: usize,
        /// The sale.
        sku: String,
    },
    /// Set `set`'s keys in every instance's config file (tables merged, anything else
    /// replaced) and send each instance SIGHUP; every one must apply it.
    Reload {
        /// What changes in the file.
        set: toml::Table,
    },
}

impl Action {
    /// The sale this action creates, if it can create one.
    pub fn creates(&self) -> Option<&str> {
        match self {
            Self::PutSale { sale, .. } => sale.get("sku").and_then(toml::Value::as_str),
            _ => None,
        }
    }
}

/// One action and how it went.
#[derive(Debug, Clone)]
pub struct Taken {
    /// When it was due, from the crowd's start.
    pub at: Duration,
    /// What it was, in words.
    pub what: String,
    /// What came of it: the system's answer, or why it failed.
    pub outcome: Result<String, String>,
}

/// Most tries of one sale change: a `412` (another change came first) means read again.
const TRIES: usize = 5;

/// Performs `events` at their times (until `stop`) and returns how each went.
pub async fn perform(
    events: &[Event],
    stack: &Stack,
    start: Instant,
    stop: &CancellationToken,
) -> Vec<Taken> {
    let mut taken = Vec::new();
    for e in events {
        tokio::select! {
            _ = stop.cancelled() => return taken,
            _ = tokio::time::sleep_until((start + e.at).into()) => {}
        }
        let what = describe(&e.action);
        eprintln!("event at {:?}: {what}", e.at);
        let outcome = match &e.action {
            Action::RestartRedis { down_for } => stack
                .restart_redis(*down_for)
                .await
                .map(|()| "redis-server back".to_owned()),
            Action::PutSale { via, sale, ends_in } => put_sale(stack, *via, sale, *ends_in).await,
            Action::EndSale { via, sku } => end_sale(stack, *via, sku).await,
            Action::Reload { set } => reload(stack, set).await,
        };
        match &outcome {
            Ok(said) => eprintln!("event: {said}"),
            Err(why) => eprintln!("event failed: {why}"),
        }
        taken.push(Taken {
            at: e.at,
            what,
            outcome,
        });
    }
    taken
}

fn describe(action: &Action) -> String {
    match action {
        Action::RestartRedis { down_for } => format!("redis-server killed, down for {down_for:?}"),
        Action::PutSale { via, sale, ends_in } => {
            let mut keys: Vec<&str> = sale.keys().map(String::as_str).collect();
            if ends_in.is_some() {
                keys.push("ends_at");
            }
            format!(
                "sale `{}` put through instance {via} ({})",
                action.creates().unwrap_or("?"),
                keys.join(", ")
            )
        }
        Action::EndSale { via, sku } => format!("sale `{sku}` ended through instance {via}"),
        Action::Reload { set } => {
            let keys: Vec<&str> = set.keys().map(String::as_str).collect();
            format!(
                "config file changed ({}) and reloaded (SIGHUP)",
                keys.join(", ")
            )
        }
    }
}

/// Read, change, write back on the version read; a `412` starts over.
async fn put_sale(
    stack: &Stack,
    via: usize,
    sale: &toml::Table,
    ends_in: Option<Duration>,
) -> Result<String, String> {
    let sku = sale
        .get("sku")
        .and_then(toml::Value::as_str)
        .ok_or("the event's sale has no sku")?;
    let path = format!("/admin/sales/{sku}");
    let mut last = String::new();
    for _ in 0..TRIES {
        let (status, current) = stack.admin_call(via, Method::GET, &path, None, &[]).await?;
        let (mut body, version) = match status {
            StatusCode::OK => (current["definition"].clone(), current["version"].as_u64()),
            StatusCode::NOT_FOUND => (Value::Object(Default::default()), None),
            other => return Err(format!("GET {path}: {other} {current}")),
        };
        let changes = serde_json::to_value(sale).map_err(|e| e.to_string())?;
        merge_json(&mut body, changes);
        if let (Some(into), Some(d)) = (body.as_object_mut(), ends_in) {
            into.insert("ends_at".into(), rfc3339(SystemTime::now() + d).into());
        }
        let headers: Vec<(&str, String)> = version
            .map(|v| ("if-match", format!("\"{v}\"")))
            .into_iter()
            .collect();
        let (status, answer) = stack
            .admin_call(via, Method::PUT, &path, Some(&body), &headers)
            .await?;
        match status {
            StatusCode::OK | StatusCode::CREATED => {
                return Ok(format!(
                    "{status}: `{sku}` at version {}",
                    answer["version"]
                ))
            }
            StatusCode::PRECONDITION_FAILED => last = format!("{status} {answer}"),
            other => return Err(format!("PUT {path}: {other} {answer}")),
        }
    }
    Err(format!(
        "PUT {path}: still refused after {TRIES} tries: {last}"
    ))
}

async fn end_sale(stack: &Stack, via: usize, sku: &str) -> Result<String, String> {
    let path = format!("/admin/sales/{sku}");
    let (status, answer) = stack
        .admin_call(via, Method::DELETE, &path, None, &[])
        .await?;
    match status {
        StatusCode::OK => Ok(format!("`{sku}` ended at version {}", answer["version"])),
        other => Err(format!("DELETE {path}: {other} {answer}")),
    }
}

/// Every instance's file changed the same way, each reloaded in turn (as `systemctl
/// reload` on each host would).
async fn reload(stack: &Stack, set: &toml::Table) -> Result<String, String> {
    let mut said = Vec::new();
    for k in 0..stack.instances.len() {
        let outcome = stack.reload(k, |file| merge(file, set)).await?;
        if outcome != "applied" {
            return Err(format!(
                "instance {k} {outcome} the reload (its log says why)"
            ));
        }
        said.push(format!("instance {k} applied it"));
    }
    Ok(said.join(", "))
}

/// Sets `set`'s keys in `into`: tables merged key by key, anything else replaced.
pub fn merge(into: &mut toml::Table, set: &toml::Table) {
    for (key, value) in set {
        match (into.get_mut(key), value) {
            (Some(toml::Value::Table(mine)), toml::Value::Table(theirs)) => merge(mine, theirs),
            _ => {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The same for a definition as JSON: `queue = { drain_rate = 150 }` keeps its capacity.
fn merge_json(into: &mut Value, set: Value) {
    match (into, set) {
        (Value::Object(mine), Value::Object(theirs)) => {
            for (key, value) in theirs {
                match mine.get_mut(&key) {
                    Some(m) if m.is_object() && value.is_object() => merge_json(m, value),
                    _ => {
                        mine.insert(key, value);
                    }
                }
            }
        }
        (into, set) => *into = set,
    }
}

/// `at` as RFC 3339, as sale windows are written.
fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{merge, merge_json};

    #[test]
    fn a_reload_merges_tables_and_replaces_the_rest() {
        let mut file: toml::Table =
            "[limits]\nper_user_rate = 5\nburst = 2\n[[sale]]\nsku = \"a\"\nstock = 1\n"
                .parse()
                .expect("toml");
        let set: toml::Table = "[limits]\nper_user_rate = 7\n[[sale]]\nsku = \"b\"\nstock = 2\n"
            .parse()
            .expect("toml");
        merge(&mut file, &set);
        assert_eq!(file["limits"]["per_user_rate"].as_integer(), Some(7));
        assert_eq!(file["limits"]["burst"].as_integer(), Some(2), "kept");
        let sales = file["sale"].as_array().expect("sales");
        assert_eq!(sales.len(), 1, "an array is replaced whole");
        assert_eq!(sales[0]["sku"].as_str(), Some("b"));
        let mut sale = serde_json::json!({"sku": "a", "queue": {"capacity": 9, "drain_rate": 1}});
        merge_json(&mut sale, serde_json::json!({"queue": {"drain_rate": 2}}));
        assert_eq!(
            sale["queue"],
            serde_json::json!({"capacity": 9, "drain_rate": 2})
        );
    }
}
