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

/// `workingDir`, else the image's, else `/`. An image's relative `WorkingDir` is taken from the
/// root (the container starts in `/`), as Docker reads it; the manifest's is absolute
/// (validated).
pub fn working_dir(pod: Option<&str>, image: &ImageProcess) -> String {
    let dir = pod
        .or(image.working_dir.as_deref())
        .filter(|d| !d.is_empty())
        .unwrap_or("/");
    match dir.starts_with('/') {
        true => dir.to_string(),
        false => format!("/{dir}"),
    }
}

/// The image's `User` could not be turned into ids.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("the image's user \"{0}\" is not in its /etc/passwd")]
    UnknownUser(String),
    #[error("the image's group \"{0}\" is not in its /etc/group")]
    UnknownGroup(String),
}

/// The uid and gid of an image's `User` (`uid`, `uid:gid`, `name`, `name:group`), names looked
/// up in the image's own `/etc/passwd` and `/etc/group` (read from its layers, topmost first,
/// resolved inside each layer). A user without a group gets its passwd entry's group, or 0.
pub fn resolve_user(user: &str, layers: &[std::path::PathBuf]) -> Result<(u32, u32), UserError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = image_file(layers, "etc/passwd");
    let entry = |name: &str| -> Option<(u32, u32)> {
        passwd.as_deref()?.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[0] == name)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    };
    let (uid, passwd_gid) = match u.parse::<u32>() {
        Ok(uid) => (uid, passwd_gid_of(passwd.as_deref(), uid)),
        Err(_) => {
            let (uid, gid) = entry(u).ok_or_else(|| UserError::UnknownUser(u.to_string()))?;
            (uid, Some(gid))
        }
    };
    let gid = match g {
        None => passwd_gid.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => image_file(layers, "etc/group")
                .and_then(|group| {
                    group.lines().find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() >= 3 && f[0] == g).then(|| f[2].parse().ok())?
                    })
                })
                .ok_or_else(|| UserError::UnknownGroup(g.to_string()))?,
        },
    };
    Ok((uid, gid))
}

fn passwd_gid_of(passwd: Option<&str>, uid: u32) -> Option<u32> {
    passwd?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse() == Ok(uid)).then(|| f[3].parse().ok())?
    })
}

/// A small text file of the image (`etc/passwd`): from the topmost layer that has it, opened
/// inside that layer (a symlink in the image cannot lead to the host's file).
fn image_file(layers: &[std::path::PathBuf], path: &str) -> Option<String> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use std::io::Read;
    for layer in layers {
        let Ok(root) = nix::fcntl::open(
            layer.as_path(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) else {
            continue;
        };
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        if let Ok(fd) = openat2(&root, path, how) {
            let file = std::fs::File::from(fd);
            if !file.metadata().is_ok_and(|m| m.is_file()) {
                return None;
            }
            let mut text = String::new();
            file.take(1 << 20).read_to_string(&mut text).ok()?;
            return Some(text);
        }
    }
    None
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
    fn image_users_resolve_through_the_images_own_files() {
        let layer = std::env::temp_dir().join(format!("wpod-user-{}", std::process::id()));
        std::fs::create_dir_all(layer.join("etc")).unwrap();
        std::fs::write(
            layer.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nnginx:x:101:102::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(layer.join("etc/group"), "root:x:0:\nweb:x:300:\n").unwrap();
        let layers = [layer.clone()];
        assert_eq!(resolve_user("nginx", &layers), Ok((101, 102)));
        assert_eq!(resolve_user("nginx:web", &layers), Ok((101, 300)));
        assert_eq!(resolve_user("1000", &layers), Ok((1000, 0)));
        assert_eq!(resolve_user("101", &layers), Ok((101, 102)));
        assert_eq!(resolve_user("1000:5", &layers), Ok((1000, 5)));
        assert_eq!(
            resolve_user("nobody", &layers),
            Err(UserError::UnknownUser("nobody".into()))
        );
        std::fs::remove_dir_all(&layer).unwrap();
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
        let relative = ImageProcess {
            working_dir: Some("app/bin".into()),
            ..ImageProcess::default()
        };
        assert_eq!(working_dir(None, &relative), "/app/bin");
    }
}
