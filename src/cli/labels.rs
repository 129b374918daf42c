//! A runner's job labels: `--label KEY=VALUE`, plus what the CI system it
//! runs under says about the job, read from that system's environment.
//!
//! Read automatically: GitHub Actions (`GITHUB_ACTIONS=true`): repository,
//! workflow, run id and job; GitLab CI (`GITLAB_CI=true`): project,
//! pipeline id, job name and id; Jenkins (`JENKINS_URL` set): job name and
//! build number. Each also sets `ci` to the system's name. A `--label`
//! with the same key wins.

use license_broker::value::labels::fit_value;
use license_broker::value::{Invalid, Labels};

/// (environment variable, label key) per CI system, after its marker.
const GITHUB: &[(&str, &str)] = &[
    ("GITHUB_REPOSITORY", "repository"),
    ("GITHUB_WORKFLOW", "workflow"),
    ("GITHUB_RUN_ID", "run"),
    ("GITHUB_JOB", "job"),
];
const GITLAB: &[(&str, &str)] =
    &[("CI_PROJECT_PATH", "project"), ("CI_PIPELINE_ID", "pipeline"), ("CI_JOB_NAME", "job"), ("CI_JOB_ID", "job_id")];
const JENKINS: &[(&str, &str)] = &[("JOB_NAME", "job"), ("BUILD_NUMBER", "build")];

/// The labels of this job: the CI system's, then `explicit` over them.
pub fn of_job(explicit: &[(String, String)], env: impl Fn(&str) -> Option<String>) -> Result<Labels, Invalid> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    let (ci, vars) = if set("GITHUB_ACTIONS").as_deref() == Some("true") {
        ("github", GITHUB)
    } else if set("GITLAB_CI").as_deref() == Some("true") {
        ("gitlab", GITLAB)
    } else if set("JENKINS_URL").is_some() {
        ("jenkins", JENKINS)
    } else {
        ("", &[][..])
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    if !ci.is_empty() {
        pairs.push(("ci".into(), ci.into()));
    }
    for (var, key) in vars {
        if let Some(v) = set(var) {
            // A CI system's value is not ours to refuse: keep what fits.
            pairs.push((key.to_string(), fit_value(&v)));
        }
    }
    pairs.extend(explicit.iter().cloned());
    Labels::new(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use license_broker::value::labels::MAX_VALUE;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn each_ci_system_is_read_and_explicit_labels_win() {
        let gh = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_REPOSITORY", "acme/web"),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_JOB", "e2e"),
        ];
        let l = of_job(&[("job".into(), "smoke".into())], env(&gh)).unwrap();
        assert_eq!(l.to_string(), "ci=github,job=smoke,repository=acme/web,run=42");
        let gl =
            [("GITLAB_CI", "true"), ("CI_PROJECT_PATH", "acme/api"), ("CI_PIPELINE_ID", "7"), ("CI_JOB_NAME", "test")];
        assert_eq!(of_job(&[], env(&gl)).unwrap().to_string(), "ci=gitlab,job=test,pipeline=7,project=acme/api");
        let jk = [("JENKINS_URL", "http://ci/"), ("JOB_NAME", "folder/app"), ("BUILD_NUMBER", "9")];
        assert_eq!(of_job(&[], env(&jk)).unwrap().to_string(), "build=9,ci=jenkins,job=folder/app");
        assert!(of_job(&[], env(&[])).unwrap().is_empty(), "outside CI: none");
        let long = "x".repeat(500);
        let gh = [("GITHUB_ACTIONS", "true"), ("GITHUB_WORKFLOW", long.as_str())];
        assert_eq!(of_job(&[], env(&gh)).unwrap().get("workflow").map(str::len), Some(MAX_VALUE));
    }
}
