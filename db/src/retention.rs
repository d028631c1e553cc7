//! Which builds a purge removes: the site config's retention policy, in buckets as Gentoo Build
//! Publisher keeps them. Every build of the last `all_days`; then the newest of each day for
//! `daily_days`, of each week for `weekly_days`, of each month (30 days) for `monthly_days`;
//! nothing older. Kept, published and running builds never go, nor a system's newest
//! succeeded build.

use std::collections::BTreeSet;

use autogentoo_core::site_config::RetentionSection;

const DAY_MS: i64 = 86_400_000;

/// What the policy needs to know of a build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub number: i64,
    /// Milliseconds since the epoch.
    pub started_at: i64,
    /// Kept (`builds keep`), published, or still running: never purged.
    pub protected: bool,
    pub succeeded: bool,
}

/// The numbers of the builds of one system the policy removes at `now` (milliseconds).
pub fn to_purge(builds: &[Candidate], policy: &RetentionSection, now: i64) -> Vec<i64> {
    let mut newest_first: Vec<&Candidate> = builds.iter().collect();
    newest_first.sort_by_key(|b| std::cmp::Reverse((b.started_at, b.number)));
    let newest_success = newest_first.iter().find(|b| b.succeeded).map(|b| b.number);
    let days = |n: u32| i64::from(n) * DAY_MS;
    let mut buckets_seen = BTreeSet::new();
    let mut purge = Vec::new();
    for build in newest_first {
        let age = now - build.started_at;
        if build.protected || Some(build.number) == newest_success || age < days(policy.all_days) {
            continue;
        }
        let bucket = if age < days(policy.daily_days) {
            Some(("day", build.started_at.div_euclid(DAY_MS)))
        } else if age < days(policy.weekly_days) {
            Some(("week", build.started_at.div_euclid(7 * DAY_MS)))
        } else if age < days(policy.monthly_days) {
            Some(("month", build.started_at.div_euclid(30 * DAY_MS)))
        } else {
            None
        };
        // The newest build of a bucket stays; the rest of it goes.
        match bucket {
            Some(bucket) if buckets_seen.insert(bucket) => {}
            _ => purge.push(build.number),
        }
    }
    purge.sort_unstable();
    purge
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(number: i64, hours_ago: i64, now: i64) -> Candidate {
        Candidate {
            number,
            started_at: now - hours_ago * 3_600_000,
            protected: false,
            succeeded: true,
        }
    }

    #[test]
    fn buckets_keep_the_last_day_then_one_a_day_a_week_a_month() {
        let policy = RetentionSection::default();
        // Midnight plus 12 hours, so that day buckets are predictable.
        let now = 20_000 * DAY_MS + 12 * 3_600_000;
        let builds = vec![
            at(1, 24 * 400, now), // older than a year: goes
            at(2, 24 * 200, now), // its month's only build: stays
            at(3, 24 * 20 + 1, now),
            at(4, 24 * 20, now), // the newer of two in one week: stays, 3 goes
            at(5, 24 * 3 + 2, now),
            at(6, 24 * 3 + 1, now), // the newer of two on one day: stays, 5 goes
            at(7, 5, now),
            at(8, 1, now), // the last day: both stay
        ];
        assert_eq!(to_purge(&builds, &policy, now), [1, 3, 5]);
    }

    #[test]
    fn kept_published_running_and_the_newest_success_never_go() {
        let policy = RetentionSection::default();
        let now = 20_000 * DAY_MS;
        let mut old = at(1, 24 * 500, now);
        old.protected = true;
        let mut failed = at(3, 24 * 450, now);
        failed.succeeded = false;
        let builds = vec![old, at(2, 24 * 480, now), failed];
        // 2 is the newest build that succeeded: the system's last good image stays.
        assert_eq!(to_purge(&builds, &policy, now), [3]);
    }
}
