//! The stale-read checker of `chat-bench run --check`: with Redis killed under load and brought
//! back, no read may miss a write that was acknowledged before the read was sent.
//!
//! Every post answered 201 is recorded with the moment its answer arrived. Every latest-page read
//! sent after that moment must show the post: its id is on the page, or the page is full of newer
//! messages (pages are ordered by id, so a post missing from a full page of newer ones is simply
//! older than the page). A `304 Not Modified` answer is checked against the page its ETag came
//! from. Anything else is a stale read: the cache served data an acknowledged write had replaced.
//!
//! Only latest pages are checked: the workload's older pages lie before messages that never change
//! (it does not edit or delete), and it never changes memberships, so channel lists cannot go stale.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use serde::Serialize;

/// How many acknowledged posts per channel are remembered. A read is checked against those acked
/// before it was sent; an older one has been pushed off any page by the newer ones anyway.
const REMEMBERED_ACKS: usize = 128;
/// How many stale reads are described in the summary.
const EXAMPLES: usize = 10;

#[derive(Debug, Default)]
pub(crate) struct Checker {
    acked: Mutex<HashMap<usize, VecDeque<(Instant, String)>>>,
    /// The page behind each ETag we were given, to check `304` answers.
    pages_by_etag: Mutex<HashMap<String, Arc<Vec<String>>>>,
    acknowledged: AtomicU64,
    checked: AtomicU64,
    held: AtomicU64,
    stale: AtomicU64,
    examples: Mutex<Vec<String>>,
}

/// What the checker saw, for the run summary.
#[derive(Debug, Serialize)]
pub(crate) struct CheckSummary {
    pub(crate) acknowledged_posts: u64,
    pub(crate) checked_reads: u64,
    /// Reads sent after at least one acknowledged post to their channel: the ones that could
    /// have been stale.
    pub(crate) held_reads: u64,
    pub(crate) stale_reads: u64,
    pub(crate) examples: Vec<String>,
}

impl Checker {
    /// A post to channel `channel` was answered 201 with `id` at `at`.
    pub(crate) fn acknowledged(&self, channel: usize, id: String, at: Instant) {
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
        let mut acked = self.acked.lock().expect("checker lock");
        let log = acked.entry(channel).or_default();
        if log.len() == REMEMBERED_ACKS {
            log.pop_front();
        }
        log.push_back((at, id));
    }

    /// Remembers the page an ETag stands for.
    pub(crate) fn remember_etag(&self, etag: &str, ids: Arc<Vec<String>>) {
        let mut pages = self.pages_by_etag.lock().expect("checker lock");
        // The workload keeps one ETag per channel; old ones are never sent again after a while.
        if pages.len() > 100_000 {
            pages.clear();
        }
        pages.insert(etag.to_owned(), ids);
    }

    /// The page an ETag stands for, if we saw it.
    pub(crate) fn page_of(&self, etag: &str) -> Option<Arc<Vec<String>>> {
        self.pages_by_etag
            .lock()
            .expect("checker lock")
            .get(etag)
            .cloned()
    }

    /// Checks a latest page of `channel` (ids newest first, at most `limit`), read by a request
    /// sent at `sent`.
    pub(crate) fn check_latest_page(
        &self,
        channel: usize,
        sent: Instant,
        ids: &[String],
        limit: usize,
        how: &str,
    ) {
        self.checked.fetch_add(1, Ordering::Relaxed);
        let missing = {
            let acked = self.acked.lock().expect("checker lock");
            let Some(log) = acked.get(&channel) else {
                return;
            };
            if log.iter().any(|(at, _)| *at < sent) {
                self.held.fetch_add(1, Ordering::Relaxed);
            }
            log.iter()
                .filter(|(at, _)| *at < sent)
                .find(|(_, id)| !is_visible(id, ids, limit))
                .map(|(at, id)| (sent.duration_since(*at), id.clone()))
        };
        if let Some((age, id)) = missing {
            self.stale.fetch_add(1, Ordering::Relaxed);
            let mut examples = self.examples.lock().expect("checker lock");
            if examples.len() < EXAMPLES {
                examples.push(format!(
                    "channel #{channel}: {how} read sent {:.1} ms after post {id} was acknowledged \
                     does not show it (newest on page: {})",
                    age.as_secs_f64() * 1000.0,
                    ids.first().map_or("none", String::as_str)
                ));
            }
        }
    }

    pub(crate) fn summary(&self) -> CheckSummary {
        CheckSummary {
            acknowledged_posts: self.acknowledged.load(Ordering::Relaxed),
            checked_reads: self.checked.load(Ordering::Relaxed),
            held_reads: self.held.load(Ordering::Relaxed),
            stale_reads: self.stale.load(Ordering::Relaxed),
            examples: self.examples.lock().expect("checker lock").clone(),
        }
    }
}

impl CheckSummary {
    /// Fails on any stale read or failed request, and when no read was held to an acknowledged
    /// post: such a run could not have seen a stale read, so it proves nothing.
    pub(crate) fn verdict(&self, failed_requests: u64) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.stale_reads == 0 && failed_requests == 0,
            "{} stale reads, {failed_requests} failed requests",
            self.stale_reads
        );
        anyhow::ensure!(
            self.held_reads > 0,
            "no latest-page read was sent after an acknowledged post to its channel \
             ({} reads checked, {} posts acknowledged): the check proved nothing",
            self.checked_reads,
            self.acknowledged_posts
        );
        Ok(())
    }
}

/// Whether a page (ids newest first) shows message `id`, or is too full of newer ones to.
fn is_visible(id: &str, page: &[String], limit: usize) -> bool {
    // ULIDs in their canonical text form sort as they were generated.
    page.iter().any(|p| p == id) || (page.len() >= limit && page.iter().all(|p| p.as_str() > id))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_page_without_an_acknowledged_post_is_stale() {
        let checker = Checker::default();
        let t0 = Instant::now();
        checker.acknowledged(1, "B".into(), t0);
        let later = t0 + Duration::from_millis(5);
        checker.check_latest_page(1, later, &ids(&["B", "A"]), 50, "200");
        assert_eq!(checker.summary().stale_reads, 0);
        checker.check_latest_page(1, later, &ids(&["A"]), 50, "200");
        assert_eq!(checker.summary().stale_reads, 1);
        assert_eq!(checker.summary().examples.len(), 1);
    }

    #[test]
    fn reads_sent_before_the_acknowledgement_are_not_held_to_it() {
        let checker = Checker::default();
        let t0 = Instant::now();
        checker.acknowledged(1, "B".into(), t0 + Duration::from_millis(5));
        checker.check_latest_page(1, t0, &ids(&["A"]), 50, "200");
        assert_eq!(checker.summary().stale_reads, 0);
        assert_eq!(checker.summary().checked_reads, 1);
        assert_eq!(checker.summary().held_reads, 0);
    }

    #[test]
    fn a_run_that_held_no_read_to_a_post_fails_its_verdict() {
        let checker = Checker::default();
        let t0 = Instant::now();
        checker.check_latest_page(1, t0, &ids(&["A"]), 50, "200");
        assert!(checker.summary().verdict(0).is_err());
        checker.acknowledged(1, "B".into(), t0);
        let later = t0 + Duration::from_millis(1);
        checker.check_latest_page(1, later, &ids(&["B", "A"]), 50, "200");
        let summary = checker.summary();
        assert_eq!(summary.held_reads, 1);
        assert!(summary.verdict(0).is_ok());
        assert!(summary.verdict(1).is_err());
        checker.check_latest_page(1, later, &ids(&["A"]), 50, "200");
        assert!(checker.summary().verdict(0).is_err());
    }

    #[test]
    fn a_full_page_of_newer_messages_need_not_show_an_older_post() {
        let checker = Checker::default();
        let t0 = Instant::now();
        checker.acknowledged(1, "B".into(), t0);
        let later = t0 + Duration::from_millis(1);
        checker.check_latest_page(1, later, &ids(&["D", "C"]), 2, "200");
        assert_eq!(checker.summary().stale_reads, 0);
        // Not full: B should be there.
        checker.check_latest_page(1, later, &ids(&["D", "C"]), 3, "200");
        assert_eq!(checker.summary().stale_reads, 1);
    }
}

/// `chat-bench compare`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompareArgs {
    /// The dataset written by `seed`.
    #[arg(long, default_value = "target/bench/dataset.json")]
    dataset: std::path::PathBuf,
    /// A chat-api on the same database without a cache (`CACHE_BACKEND=none`): the truth.
    #[arg(long)]
    against: String,
}

/// Reads every channel's latest page from the server under test and from an uncached server on
/// the same database; any difference is a stale page the cache kept.
pub(crate) async fn compare(client: &crate::api::Client, args: &CompareArgs) -> anyhow::Result<()> {
    let dataset = crate::dataset::Dataset::load(&args.dataset)?;
    let truth = crate::api::Client::new(&args.against)?;
    let mut differing = Vec::new();
    for (c, channel) in dataset.channels.iter().enumerate() {
        let Some(&member) = channel.members.first() else {
            continue;
        };
        let token = &dataset.users[member].token;
        let read = |client: &crate::api::Client| {
            let (client, token, id) = (client.clone(), token.clone(), channel.id.clone());
            async move {
                let page = client.messages(&token, &id, 50, None, None, true).await?;
                page.ids.ok_or_else(|| {
                    anyhow::anyhow!("channel #{c}: latest page answered {}", page.outcome.status)
                })
            }
        };
        let (cached, stored) = (read(client).await?, read(&truth).await?);
        if cached != stored {
            differing.push(format!(
                "channel #{c}: cached newest {:?}, database newest {:?}",
                cached.first(),
                stored.first()
            ));
        }
    }
    eprintln!(
        "compare: {} channels, {} latest pages differ from the database",
        dataset.channels.len(),
        differing.len()
    );
    for line in differing.iter().take(EXAMPLES) {
        eprintln!("  {line}");
    }
    anyhow::ensure!(
        differing.is_empty(),
        "the cache disagrees with the database"
    );
    Ok(())
}
