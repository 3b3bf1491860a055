//! Kubernetes' rules for the process of a container from an image (containerd's
//! `WithProcessArgs`, the kubelet's env and working directory): what the Pod says wins, the
//! image fills in what it leaves out.

/// What an image's config says about its process (`config.Entrypoint`, `Cmd`, `Env`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageProcess {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` strings.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `uid`, `uid:gid`, `name` or `name:group`.
    pub user: Option<String>,
    pub stop_signal: Option<String>,
}

/// The image has nothing to run and the Pod names nothing either.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("no command specified: the image has no Entrypoint or Cmd; give the container a command")]
pub struct NoCommand;

/// The argv of a container: `command` replaces the image's Entrypoint and `args` its Cmd.
///
/// | command | args | runs |
/// |---|---|---|
/// | - | - | Entrypoint + Cmd |
/// | set | - | command (Cmd ignored) |
/// | - | set | Entrypoint + args |
/// | set | set | command + args |
pub fn argv(
    command: &[String],
    args: &[String],
    image: &ImageProcess,
) -> Result<Vec<String>, NoCommand> {
    // An Entrypoint of [""] (a Dockerfile's `ENTRYPOINT [""]`) counts as none.
    let entrypoint: &[String] = if image.entrypoint.iter().all(String::is_empty) {
        &[]
    } else {
        &image.entrypoint
    };
    let argv: Vec<String> = match (command.is_empty(), args.is_empty()) {
        (true, true) => entrypoint.iter().chain(&image.cmd).cloned().collect(),
        (false, true) => command.to_vec(),
        (true, false) => entrypoint.iter().chain(args).cloned().collect(),
        (false, false) => command.iter().chain(args).cloned().collect(),
    };
    if argv.is_empty() {
        Err(NoCommand)
    } else {
        Ok(argv)
    }
}

/// The image's environment with the Pod's `env` over it (a Pod variable replaces the image's
/// of the same name, in the image's place), then the rest of the Pod's in order.
pub fn env(image: &[String], pod: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = image
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    for (k, v) in pod {
        match out.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v.clone(),
            None => out.push((k.clone(), v.clone())),
        }
    }
    out
}

/// `workingDir`, else the image's, else `/`.
pub fn working_dir(pod: Option<&str>, image: &ImageProcess) -> String {
    pod.or(image.working_dir.as_deref())
        .filter(|d| !d.is_empty())
        .unwrap_or("/")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_and_args_replace_entrypoint_and_cmd_in_all_four_combinations() {
        let image = ImageProcess {
            entrypoint: v(&["/docker-entrypoint.sh"]),
            cmd: v(&["nginx", "-g", "daemon off;"]),
            ..Default::default()
        };
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (
                &[],
                &[],
                &["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"],
            ),
            (&["sh", "-c", "echo hi"], &[], &["sh", "-c", "echo hi"]),
            (
                &[],
                &["nginx", "-T"],
                &["/docker-entrypoint.sh", "nginx", "-T"],
            ),
            (&["nginx"], &["-T"], &["nginx", "-T"]),
        ];
        for (command, args, want) in cases {
            assert_eq!(
                argv(&v(command), &v(args), &image).unwrap(),
                v(want),
                "command {command:?} args {args:?}"
            );
        }
    }

    #[test]
    fn an_empty_entrypoint_counts_as_none_and_nothing_at_all_is_an_error() {
        let image = ImageProcess {
            entrypoint: v(&[""]),
            cmd: v(&["sh"]),
            ..Default::default()
        };
        assert_eq!(argv(&[], &[], &image).unwrap(), v(&["sh"]));
        assert_eq!(argv(&[], &v(&["ls"]), &image).unwrap(), v(&["ls"]));
        assert_eq!(argv(&[], &[], &ImageProcess::default()), Err(NoCommand));
    }

    #[test]
    fn pod_env_overrides_the_images_in_place() {
        let merged = env(
            &v(&["PATH=/usr/bin:/bin", "NGINX_VERSION=1.25", "EMPTY"]),
            &[
                ("NGINX_VERSION".to_string(), "custom".to_string()),
                ("MODE".to_string(), "test".to_string()),
            ],
        );
        let want: Vec<(String, String)> = [
            ("PATH", "/usr/bin:/bin"),
            ("NGINX_VERSION", "custom"),
            ("EMPTY", ""),
            ("MODE", "test"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(merged, want);
    }

    #[test]
    fn working_dir_falls_back_to_the_image_then_root() {
        let image = ImageProcess {
            working_dir: Some("/app".into()),
            ..Default::default()
        };
        assert_eq!(working_dir(Some("/srv"), &image), "/srv");
        assert_eq!(working_dir(None, &image), "/app");
        assert_eq!(working_dir(None, &ImageProcess::default()), "/");
    }
}
