//! The APIs a bench run can load, and weighted mixes of them (`put=80,get=20`).

use clap::ValueEnum;
use serde::Serialize;

/// Every API of docs/API.md; `stream` and `watch` measure publish-to-delivery latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchApi {
    Put,
    Get,
    Delete,
    Incr,
    List,
    #[value(name = "create_topic", alias = "create-topic")]
    CreateTopic,
    #[value(name = "delete_topic", alias = "delete-topic")]
    DeleteTopic,
    #[value(name = "list_topics", alias = "list-topics")]
    ListTopics,
    Publish,
    Subscribe,
    Unsubscribe,
    Pull,
    Read,
    Stream,
    Watch,
    Status,
    /// A transaction writing two keys of one slot (a put and an increment).
    Txn,
}

impl BenchApi {
    pub const ALL: [BenchApi; 17] = [
        BenchApi::Put,
        BenchApi::Get,
        BenchApi::Delete,
        BenchApi::Incr,
        BenchApi::List,
        BenchApi::CreateTopic,
        BenchApi::DeleteTopic,
        BenchApi::ListTopics,
        BenchApi::Publish,
        BenchApi::Subscribe,
        BenchApi::Unsubscribe,
        BenchApi::Pull,
        BenchApi::Read,
        BenchApi::Stream,
        BenchApi::Watch,
        BenchApi::Status,
        BenchApi::Txn,
    ];

    /// The API's name (the `api` label of the node's metrics).
    pub fn name(self) -> &'static str {
        match self {
            BenchApi::Put => "put",
            BenchApi::Get => "get",
            BenchApi::Delete => "delete",
            BenchApi::Incr => "incr",
            BenchApi::List => "list",
            BenchApi::CreateTopic => "create_topic",
            BenchApi::DeleteTopic => "delete_topic",
            BenchApi::ListTopics => "list_topics",
            BenchApi::Publish => "publish",
            BenchApi::Subscribe => "subscribe",
            BenchApi::Unsubscribe => "unsubscribe",
            BenchApi::Pull => "pull",
            BenchApi::Read => "read",
            BenchApi::Stream => "stream",
            BenchApi::Watch => "watch",
            BenchApi::Status => "status",
            BenchApi::Txn => "txn",
        }
    }
}

/// Weighted choice of APIs, e.g. `put=80,get=20`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix(pub Vec<(BenchApi, u32)>);

impl Mix {
    /// Picks an API for `u` in `[0, 1)`.
    pub fn pick(&self, u: f64) -> BenchApi {
        let total: u32 = self.0.iter().map(|(_, w)| w).sum();
        let mut point = (u.clamp(0.0, 1.0) * f64::from(total)) as u32;
        for (api, w) in &self.0 {
            if point < *w {
                return *api;
            }
            point -= w;
        }
        self.0.last().map(|(a, _)| *a).unwrap_or(BenchApi::Put)
    }

    pub fn has(&self, api: BenchApi) -> bool {
        self.0.iter().any(|(a, _)| *a == api)
    }

    pub fn any(&self, apis: &[BenchApi]) -> bool {
        apis.iter().any(|a| self.has(*a))
    }
}

pub fn parse_mix(s: &str) -> Result<Mix, String> {
    let mut out: Vec<(BenchApi, u32)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected API=WEIGHT"))?;
        let api = BenchApi::from_str(name.trim(), true).map_err(|_| {
            let names: Vec<&str> = BenchApi::ALL.iter().map(|a| a.name()).collect();
            format!("unknown API {name:?} (one of {})", names.join(", "))
        })?;
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: weight must be a whole number"))?;
        if out.iter().any(|(a, _)| *a == api) {
            return Err(format!("{name} appears twice"));
        }
        if weight > 0 {
            out.push((api, weight));
        }
    }
    let total: u64 = out.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 || total > u64::from(u32::MAX) {
        return Err("the weights must add up to more than 0".into());
    }
    Ok(Mix(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parsing() {
        let m = parse_mix("put=80, get=20").unwrap();
        assert_eq!(m, Mix(vec![(BenchApi::Put, 80), (BenchApi::Get, 20)]));
        assert_eq!(
            parse_mix("pull=1,publish=0").unwrap(),
            Mix(vec![(BenchApi::Pull, 1)])
        );
        assert_eq!(
            parse_mix("create_topic=1,delete-topic=1").unwrap(),
            Mix(vec![(BenchApi::CreateTopic, 1), (BenchApi::DeleteTopic, 1)])
        );
        for bad in [
            "",
            "put",
            "put=x",
            "put=1,put=2",
            "fly=1",
            "put=0",
            "put=-1",
        ] {
            assert!(parse_mix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_api_has_its_metric_name() {
        for api in BenchApi::ALL {
            let parsed = BenchApi::from_str(api.name(), false).unwrap();
            assert_eq!(parsed, api);
        }
    }

    #[test]
    fn mix_picks_by_weight() {
        let m = parse_mix("put=80,get=20").unwrap();
        assert_eq!(m.pick(0.0), BenchApi::Put);
        assert_eq!(m.pick(0.79), BenchApi::Put);
        assert_eq!(m.pick(0.80), BenchApi::Get);
        assert_eq!(m.pick(0.999_999), BenchApi::Get);
        let n = 100_000;
        let puts = (0..n)
            .filter(|_| m.pick(rcluster_client::random::unit()) == BenchApi::Put)
            .count();
        let share = puts as f64 / n as f64;
        assert!((0.77..0.83).contains(&share), "{share}");
    }
}
