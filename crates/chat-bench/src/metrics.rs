//! chat-api's own counts around a run: its `/stats` document (the `chat-stats` types chat-api
//! writes it from) read before and after, and the [`Delta`] the report needs: database queries,
//! hits per tier, Upstash requests and billed commands, loads, L2 trouble.

use std::collections::BTreeMap;

use chat_stats::{BreakerState, Stats, TierStats};
use serde::{Deserialize, Serialize};

use crate::api::Client;

/// The document, or `None` (after a warning) when it could not be read: a run still reports its
/// latencies without the server's counts.
pub(crate) async fn scrape(client: &Client) -> Option<Stats> {
    match client.stats().await {
        Ok(stats) => Some(stats),
        Err(err) => {
            eprintln!("warning: could not read chat-api's /stats: {err:#}");
            None
        }
    }
}

/// Every instance's document (see [`Client::instances`]), each `None` when it could not be read.
pub(crate) async fn scrape_all(client: &Client) -> Vec<Option<Stats>> {
    let mut all = Vec::new();
    for i in 0..client.instances() {
        all.push(match client.stats_of(i).await {
            Ok(stats) => Some(stats),
            Err(err) => {
                eprintln!("warning: could not read instance {i}'s /stats: {err:#}");
                None
            }
        });
    }
    all
}

/// The sum of every instance's [`delta`]; measured only if every instance was.
pub(crate) fn delta_all(before: &[Option<Stats>], after: &[Option<Stats>]) -> Delta {
    let mut sum = Delta {
        measured: !before.is_empty() && before.len() == after.len(),
        ..Delta::default()
    };
    for (b, a) in before.iter().zip(after) {
        let d = delta(b.as_ref(), a.as_ref());
        sum.measured &= d.measured;
        sum.add(&d);
    }
    if !sum.measured {
        return Delta::default();
    }
    sum
}

/// What the run changed, from two readings. Written into each scenario's summary and read back
/// by `chat-bench report` through this same type.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Delta {
    /// `false` when a reading failed: the counts below are then zero, not measured.
    pub(crate) measured: bool,
    pub(crate) db_queries: u64,
    pub(crate) db_queries_by_op: BTreeMap<String, u64>,
    /// Per tier name (`memory`, `l1`, `l2`, `upstash`).
    pub(crate) cache_hits: BTreeMap<String, u64>,
    pub(crate) cache_misses: BTreeMap<String, u64>,
    pub(crate) upstash_requests: u64,
    pub(crate) upstash_commands: u64,
    pub(crate) loads: u64,
    pub(crate) coalesced: u64,
    /// Of the remote tier (`l2`, or `upstash` alone).
    pub(crate) l2_errors: u64,
    pub(crate) l2_timeouts: u64,
    pub(crate) l2_skipped: u64,
    pub(crate) breaker_state_after: Option<BreakerState>,
    /// Messages the backplane published (Upstash `PUBLISH`; one command may carry several).
    pub(crate) backplane_published: u64,
}

impl Delta {
    /// Adds another instance's counts to these.
    fn add(&mut self, other: &Delta) {
        self.db_queries += other.db_queries;
        for (into, from) in [
            (&mut self.db_queries_by_op, &other.db_queries_by_op),
            (&mut self.cache_hits, &other.cache_hits),
            (&mut self.cache_misses, &other.cache_misses),
        ] {
            for (k, v) in from {
                *into.entry(k.clone()).or_default() += v;
            }
        }
        self.upstash_requests += other.upstash_requests;
        self.upstash_commands += other.upstash_commands;
        self.loads += other.loads;
        self.coalesced += other.coalesced;
        self.l2_errors += other.l2_errors;
        self.l2_timeouts += other.l2_timeouts;
        self.l2_skipped += other.l2_skipped;
        self.breaker_state_after = self.breaker_state_after.or(other.breaker_state_after);
        self.backplane_published += other.backplane_published;
    }

    /// hits / (hits + misses) of `tier` during the run, when it was read.
    pub(crate) fn hit_ratio(&self, tier: &str) -> Option<f64> {
        let hits = *self.cache_hits.get(tier)?;
        let misses = self.cache_misses.get(tier).copied().unwrap_or(0);
        let total = hits + misses;
        (total > 0).then(|| hits as f64 / total as f64)
    }
}

/// The remote tier: Upstash under a tiered cache (`l2`) or alone.
fn is_remote(tier: &TierStats) -> bool {
    tier.requests.is_some()
}

pub(crate) fn delta(before: Option<&Stats>, after: Option<&Stats>) -> Delta {
    let (Some(before), Some(after)) = (before, after) else {
        return Delta::default();
    };
    // Counters only grow; a restart between the readings must not underflow.
    let change = |a: u64, b: u64| a.saturating_sub(b);
    let tier_before = |name: &str| before.cache.tiers.iter().find(|t| t.tier == name);
    let mut d = Delta {
        measured: true,
        db_queries: change(after.db.queries, before.db.queries),
        upstash_requests: 0,
        upstash_commands: 0,
        loads: change(after.cache.lookups.loads, before.cache.lookups.loads),
        coalesced: change(
            after.cache.lookups.coalesced,
            before.cache.lookups.coalesced,
        ),
        breaker_state_after: after.cache.breaker.map(|b| b.state),
        ..Delta::default()
    };
    if let Some(bus) = &after.backplane {
        let old = before.backplane.as_ref().map_or(0, |b| b.published);
        d.backplane_published = change(bus.published, old);
    }
    for (op, n) in &after.db.queries_by_op {
        let n = change(*n, before.db.queries_by_op.get(op).copied().unwrap_or(0));
        if n > 0 {
            d.db_queries_by_op.insert(op.clone(), n);
        }
    }
    for tier in &after.cache.tiers {
        let old = tier_before(&tier.tier).cloned().unwrap_or_default();
        d.cache_hits
            .insert(tier.tier.clone(), change(tier.hits, old.hits));
        d.cache_misses
            .insert(tier.tier.clone(), change(tier.misses, old.misses));
        let optional = |a: Option<u64>, b: Option<u64>| change(a.unwrap_or(0), b.unwrap_or(0));
        d.upstash_requests += optional(tier.requests, old.requests);
        d.upstash_commands += optional(tier.commands, old.commands);
        if is_remote(tier) {
            d.l2_errors += change(tier.errors, old.errors);
            d.l2_timeouts += change(tier.timeouts, old.timeouts);
            d.l2_skipped += change(tier.skipped, old.skipped);
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn tier(name: &str, hits: u64, requests: Option<u64>) -> TierStats {
        TierStats {
            tier: name.into(),
            backend: name.into(),
            hits,
            errors: hits / 10,
            requests,
            commands: requests.map(|r| r * 2),
            ..TierStats::default()
        }
    }

    #[test]
    fn deltas_are_per_tier_and_never_underflow() {
        let mut before = Stats::default();
        before.db.queries = 10;
        before.db.queries_by_op.insert("page".into(), 10);
        before.cache.tiers = vec![tier("l1", 5, None), tier("l2", 20, Some(7))];
        let mut after = before.clone();
        after.db.queries = 15;
        after.db.queries_by_op.insert("page".into(), 13);
        after.db.queries_by_op.insert("list".into(), 2);
        after.cache.tiers = vec![tier("l1", 50, None), tier("l2", 30, Some(10))];
        let d = delta(Some(&before), Some(&after));
        assert!(d.measured);
        assert_eq!(d.db_queries, 5);
        assert_eq!(d.db_queries_by_op["page"], 3);
        assert_eq!(d.cache_hits["l1"], 45);
        assert_eq!((d.upstash_requests, d.upstash_commands), (3, 6));
        assert_eq!(d.l2_errors, 1, "only the remote tier's errors");
        // A restarted server reads lower than before.
        assert_eq!(delta(Some(&after), Some(&before)).db_queries, 0);
        assert!(!delta(None, Some(&after)).measured);
    }

    #[test]
    fn instances_add_up_and_one_unread_instance_leaves_the_sum_unmeasured() {
        let mut before = Stats::default();
        before.db.queries = 10;
        before.cache.tiers = vec![tier("l1", 5, None), tier("l2", 20, Some(7))];
        let mut after = before.clone();
        after.db.queries = 15;
        after.cache.tiers = vec![tier("l1", 50, None), tier("l2", 30, Some(10))];
        let two = [Some(before.clone()), Some(before.clone())];
        let d = delta_all(&two, &[Some(after.clone()), Some(after.clone())]);
        assert!(d.measured);
        assert_eq!(d.db_queries, 10);
        assert_eq!(d.cache_hits["l1"], 90);
        assert_eq!((d.upstash_requests, d.upstash_commands), (6, 12));
        assert_eq!(d, {
            let mut one = delta(Some(&before), Some(&after));
            let copy = one.clone();
            one.add(&copy);
            one
        });
        assert!(!delta_all(&two, &[Some(after), None]).measured);
        assert!(!delta_all(&[], &[]).measured);
    }

    #[test]
    fn the_summary_round_trips_through_the_same_type() {
        let mut d = Delta {
            measured: true,
            db_queries: 4,
            breaker_state_after: Some(BreakerState::Open),
            ..Delta::default()
        };
        d.cache_hits.insert("memory".into(), 3);
        d.cache_misses.insert("memory".into(), 1);
        let json = serde_json::to_value(&d).unwrap();
        let back: Delta = serde_json::from_value(json).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.hit_ratio("memory"), Some(0.75));
    }

    /// A real chat-api (in process, SQLite in a temporary directory, the memory cache) measured
    /// the way a bench run measures it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_real_chat_api_is_measured_through_its_stats() {
        let dir = tempfile::tempdir().unwrap();
        let config = chat_api::Config {
            database_url: format!("sqlite://{}", dir.path().join("chat.db").display()),
            rate_limit: false,
            ..chat_api::Config::default()
        };
        let state = chat_api::AppState::from_config(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(chat_api::serve(
            listener,
            chat_api::app(state.clone()),
            chat_api::ServerLimits::default(),
            async move {
                let _ = stopped.await;
            },
        ));

        let client = Client::new(&base).unwrap();
        let (_, token) = client.register("ann").await.unwrap();
        let channel = client.create_channel(&token, "general").await.unwrap();
        let before = scrape(&client).await;
        assert!(before.is_some(), "/stats answers");
        let (posted, _) = client.post(&token, &channel, "hello").await.unwrap();
        assert!(!posted.is_error());
        for _ in 0..3 {
            let page = client
                .messages(&token, &channel, 50, None, None, false)
                .await
                .unwrap();
            assert!(!page.outcome.is_error());
        }
        let after = scrape(&client).await;
        let d = delta(before.as_ref(), after.as_ref());

        assert!(d.measured);
        assert_eq!(d.db_queries_by_op.get("post_message"), Some(&1), "{d:?}");
        assert_eq!(
            d.db_queries,
            d.db_queries_by_op.values().sum::<u64>(),
            "{d:?}"
        );
        // The post invalidated the latest page: the first read loads it, the next two hit.
        assert!(d.loads >= 1, "{d:?}");
        assert!(
            d.cache_hits.get("memory").copied().unwrap_or(0) >= 2,
            "{d:?}"
        );
        assert_eq!((d.upstash_requests, d.upstash_commands), (0, 0));
        assert_eq!(d.breaker_state_after, None, "memory has no breaker");
        // What the bench read is what the store and cache-core count.
        let after = after.unwrap();
        assert_eq!(after.db.queries, state.store().query_counts().total);
        let core = state.cache().cache().stats();
        assert_eq!(after.cache.tiers[0].hits, core.tiers[0].hits);
        assert_eq!(after.cache.lookups.loads, core.loads.loads);

        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server drains")
            .unwrap()
            .unwrap();
    }
}
