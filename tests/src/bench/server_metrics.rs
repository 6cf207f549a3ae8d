//! Reads the server's commit-group metrics around each remote write
//! workload, so the report shows how many writes shared each durable commit
//! (the mechanism behind the concurrency targets) and how long commits took.

use std::fmt;

use anyhow::Context;

/// Cumulative commit counters from `GET /metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommitCounters {
    /// Committed groups (transactions).
    pub groups: f64,
    /// Write requests in those groups.
    pub writes: f64,
    /// Seconds spent applying and committing them, fsync included.
    pub commit_seconds: f64,
}

impl CommitCounters {
    pub fn since(&self, earlier: &CommitCounters) -> CommitCounters {
        CommitCounters {
            groups: self.groups - earlier.groups,
            writes: self.writes - earlier.writes,
            commit_seconds: self.commit_seconds - earlier.commit_seconds,
        }
    }
}

impl fmt::Display for CommitCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.groups <= 0.0 {
            return f.write_str("no commits");
        }
        write!(
            f,
            "{:.0} commits, {:.1} writes/commit, {:.2} ms/commit",
            self.groups,
            self.writes / self.groups,
            self.commit_seconds * 1000.0 / self.groups
        )
    }
}

pub struct MetricsProbe {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl MetricsProbe {
    pub fn new(base_url: &str, token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder().build()?,
            url: format!("{base_url}{}", drasi_store_protocol::routes::METRICS),
            token: token.to_string(),
        })
    }

    pub async fn read(&self) -> anyhow::Result<CommitCounters> {
        let text = self
            .client
            .get(&self.url)
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        parse(&text).with_context(|| format!("no commit metrics in {}", self.url))
    }
}

impl MetricsProbe {
    /// Requests the server answered for one operation label (e.g. `batch`),
    /// over every status.
    pub async fn requests(&self, operation: &str) -> anyhow::Result<f64> {
        let text = self
            .client
            .get(&self.url)
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(request_count(&text, operation))
    }
}

/// Sums `drasi_store_requests_total{operation="<operation>",...}` over its
/// status labels.
pub fn request_count(text: &str, operation: &str) -> f64 {
    let label = format!("operation=\"{operation}\"");
    text.lines()
        .filter(|l| l.starts_with("drasi_store_requests_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Picks the commit histograms' `_sum` and `_count` out of Prometheus text.
pub fn parse(text: &str) -> Option<CommitCounters> {
    let value = |name: &str| {
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (metric, rest) = l.split_once(' ')?;
            (metric == name).then(|| rest.split_whitespace().next()?.parse::<f64>().ok())?
        })
    };
    Some(CommitCounters {
        groups: value("drasi_store_commit_group_size_count")?,
        writes: value("drasi_store_commit_group_size_sum")?,
        commit_seconds: value("drasi_store_commit_duration_seconds_sum")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_text() {
        let text = "# HELP drasi_store_commit_group_size Write requests committed together.\n\
                    # TYPE drasi_store_commit_group_size histogram\n\
                    drasi_store_commit_group_size_sum 640.0\n\
                    drasi_store_commit_group_size_count 20\n\
                    drasi_store_commit_group_size_bucket{le=\"1.0\"} 0\n\
                    drasi_store_commit_duration_seconds_sum 0.01\n\
                    drasi_store_commit_duration_seconds_count 20\n";
        let c = parse(text).unwrap();
        assert_eq!(c.groups, 20.0);
        assert_eq!(c.writes, 640.0);
        let delta = c.since(&CommitCounters::default());
        assert_eq!(
            delta.to_string(),
            "20 commits, 32.0 writes/commit, 0.50 ms/commit"
        );
        assert_eq!(parse("drasi_store_keys 3\n"), None);
        let requests = "drasi_store_requests_total{operation=\"batch\",status=\"200\"} 7\n\
                        drasi_store_requests_total{operation=\"batch\",status=\"413\"} 1\n\
                        drasi_store_requests_total{operation=\"set\",status=\"204\"} 5\n";
        assert_eq!(request_count(requests, "batch"), 8.0);
        assert_eq!(request_count(requests, "get"), 0.0);
    }
}
