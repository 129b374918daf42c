//! Which ended sessions a report keeps: by user, machine, pool and job
//! label, the filters of the vendor's License Utilization Dashboard (user
//! email, machine ID, license type) and one more (a job label). The API,
//! the console and the CLI parse the same words into the same filter.

use super::EndedRow;

/// A filter on ended sessions; an empty one keeps every session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// The user's email, exactly (case-insensitive).
    pub user: Option<String>,
    /// The machine ID, exactly.
    pub machine: Option<String>,
    /// The pool, `PRODUCT-KIND-TERM`.
    pub pool: Option<String>,
    /// A job label: `key=value`, or a value under any key.
    pub label: Option<(Option<String>, String)>,
}

impl SessionFilter {
    /// The filter a query names: `user`, `machine`, `pool`, `label`
    /// (absent or empty: not filtered).
    pub fn of(get: impl Fn(&str) -> Option<String>) -> SessionFilter {
        let given = |k: &str| get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let label = given("label").map(|l| match l.split_once('=') {
            Some((k, v)) => (Some(k.trim().to_string()), v.trim().to_string()),
            None => (None, l),
        });
        // A pool as any door spells it (`KSE-Floating-Annual`), as stored.
        let pool = given("pool").map(|p| p.parse::<crate::core::PoolId>().map_or(p, |id| id.to_string()));
        SessionFilter { user: given("user"), machine: given("machine"), pool, label }
    }

    /// Whether it keeps every session.
    pub fn is_empty(&self) -> bool {
        *self == SessionFilter::default()
    }

    /// Whether `r` passes.
    pub fn keeps(&self, r: &EndedRow) -> bool {
        self.user.as_ref().is_none_or(|u| u.eq_ignore_ascii_case(&r.user))
            && self.machine.as_ref().is_none_or(|m| *m == r.machine)
            && self.pool.as_ref().is_none_or(|p| *p == r.pool)
            && self.label.as_ref().is_none_or(|(key, value)| {
                r.labels.iter().any(|(k, v)| v == value && key.as_ref().is_none_or(|key| key == k))
            })
    }

    /// The filter as query pairs (for links that keep it).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let label = self.label.as_ref().map(|(k, v)| match k {
            Some(k) => format!("{k}={v}"),
            None => v.clone(),
        });
        [("user", self.user.clone()), ("machine", self.machine.clone()), ("pool", self.pool.clone()), ("label", label)]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, machine: &str, pool: &str, labels: &[(&str, &str)]) -> EndedRow {
        EndedRow {
            pool: pool.into(),
            user: user.into(),
            machine: machine.into(),
            start: 0,
            end: 1,
            reason: "released".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn each_filter_keeps_only_what_it_names() {
        let q = |pairs: &'static [(&'static str, &'static str)]| {
            SessionFilter::of(|k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
        };
        let a = row("a@x.io", "ci-1", "kre-floating-annual", &[("pipeline", "web"), ("job", "e2e")]);
        let b = row("b@x.io", "ci-2", "kse-floating-annual", &[("job", "web")]);
        assert!(q(&[]).is_empty() && q(&[]).keeps(&a) && q(&[("user", " ")]).keeps(&b));
        assert_eq!((q(&[("user", "A@X.io")]).keeps(&a), q(&[("user", "a@x.io")]).keeps(&b)), (true, false));
        assert_eq!((q(&[("machine", "ci-2")]).keeps(&a), q(&[("machine", "ci-2")]).keeps(&b)), (false, true));
        assert_eq!(
            (q(&[("pool", "kse-floating-annual")]).keeps(&a), q(&[("pool", "kse-floating-annual")]).keeps(&b)),
            (false, true)
        );
        let any_web = q(&[("label", "web")]);
        assert!(any_web.keeps(&a) && any_web.keeps(&b), "a value under any key");
        let pipeline_web = q(&[("label", "pipeline=web")]);
        assert!(pipeline_web.keeps(&a) && !pipeline_web.keeps(&b), "key=value names the key");
        assert!(!q(&[("user", "a@x.io"), ("machine", "ci-2")]).keeps(&a), "filters combine");
        assert_eq!(pipeline_web.pairs(), vec![("label", "pipeline=web".to_string())]);
    }
}
