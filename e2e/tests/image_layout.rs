//! The test bed builds its images without a Docker engine (`e2e/cluster/image.sh`);
//! users get theirs from the `Dockerfile`. Both must give the same user,
//! entrypoint, command and binary path, or what the cluster suite proves is
//! not what users run. This reads the Dockerfile's runtime stages and compares
//! them with what `image.sh --print-config` says it builds.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// What an image runs, as both builds describe it.
#[derive(Debug, Default, PartialEq, Eq)]
struct ImageConfig {
    user: String,
    entrypoint: String,
    cmd: String,
}

/// One `FROM ... AS name` stage: its base and its instructions.
#[derive(Debug, Default)]
struct Stage {
    base: String,
    lines: Vec<(String, String)>,
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ sits in the workspace root")
}

/// The Dockerfile's stages by name, with continuation lines joined.
fn stages(dockerfile: &str) -> BTreeMap<String, Stage> {
    let joined = dockerfile.replace("\\\n", " ");
    let mut stages = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        let instruction = instruction.to_ascii_uppercase();
        if instruction == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [base, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    stages.insert(
                        (*name).to_owned(),
                        Stage {
                            base: (*base).to_owned(),
                            lines: Vec::new(),
                        },
                    );
                    Some((*name).to_owned())
                }
                _ => None,
            };
            current = name;
        } else if let Some(stage) = current.as_ref().and_then(|name| stages.get_mut(name)) {
            stage.lines.push((instruction, rest.trim().to_owned()));
        }
    }
    stages
}

/// The last value of `instruction` in `stage` or, failing that, in the stages
/// it is built `FROM` (as Docker inherits USER, ENTRYPOINT and CMD).
fn inherited(stages: &BTreeMap<String, Stage>, stage: &str, instruction: &str) -> Option<String> {
    let mut name = stage;
    loop {
        let current = stages.get(name)?;
        if let Some((_, value)) = current
            .lines
            .iter()
            .rev()
            .find(|(found, _)| found == instruction)
        {
            return Some(value.clone());
        }
        name = &current.base;
    }
}

/// `["a", "b"]` (exec form) as "a b".
fn exec_form(value: &str) -> String {
    let words: Vec<String> = serde_json::from_str(value)
        .unwrap_or_else(|err| panic!("{value} is not the exec (JSON) form: {err}"));
    words.join(" ")
}

fn dockerfile_config(target: &str) -> ImageConfig {
    let text = std::fs::read_to_string(workspace_root().join("Dockerfile")).unwrap();
    let stages = stages(&text);
    assert!(
        stages.contains_key(target),
        "the Dockerfile has no stage {target}"
    );
    let get = |instruction: &str| {
        inherited(&stages, target, instruction)
            .unwrap_or_else(|| panic!("stage {target} sets no {instruction}"))
    };
    ImageConfig {
        user: get("USER"),
        entrypoint: exec_form(&get("ENTRYPOINT")),
        cmd: exec_form(&get("CMD")),
    }
}

fn image_sh_config(component: &str) -> ImageConfig {
    let script = workspace_root().join("e2e/cluster/image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["--print-config", component])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "image.sh --print-config {component}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut config = ImageConfig::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match line.split_once('=') {
            Some(("user", value)) => config.user = value.to_owned(),
            Some(("entrypoint", value)) => config.entrypoint = value.to_owned(),
            Some(("cmd", value)) => config.cmd = value.to_owned(),
            _ => panic!("unexpected line from image.sh: {line}"),
        }
    }
    config
}

/// The binary the stage copies in lands where the entrypoint runs it from.
fn copied_binary(target: &str) -> String {
    let text = std::fs::read_to_string(workspace_root().join("Dockerfile")).unwrap();
    let stages = stages(&text);
    let copy = stages[target]
        .lines
        .iter()
        .find(|(instruction, _)| instruction == "COPY")
        .map(|(_, rest)| rest.clone())
        .unwrap_or_else(|| panic!("stage {target} copies nothing"));
    copy.split_whitespace()
        .last()
        .expect("COPY names a destination")
        .to_owned()
}

#[test]
fn test_bed_images_match_the_dockerfile() {
    for component in ["replica", "operator"] {
        let from_dockerfile = dockerfile_config(component);
        assert_eq!(
            image_sh_config(component),
            from_dockerfile,
            "e2e/cluster/image.sh and the Dockerfile's stage {component} disagree"
        );
        assert_eq!(copied_binary(component), from_dockerfile.entrypoint);
        assert_eq!(
            from_dockerfile.entrypoint,
            format!("/usr/local/bin/dledger-{component}")
        );
        assert!(
            !from_dockerfile.user.starts_with("0") && !from_dockerfile.user.starts_with("root"),
            "the {component} image must not run as root: {}",
            from_dockerfile.user
        );
    }
}

#[test]
fn the_parser_sees_inheritance_and_catches_a_difference() {
    let text = "FROM base AS common\nUSER 1:1\nFROM common AS app\nENTRYPOINT [\"/bin/app\"]\nCMD [\"go\"]\n";
    let stages = stages(text);
    assert_eq!(inherited(&stages, "app", "USER").as_deref(), Some("1:1"));
    assert_eq!(
        inherited(&stages, "app", "CMD").as_deref(),
        Some("[\"go\"]")
    );
    assert_eq!(inherited(&stages, "app", "WORKDIR"), None);
    assert_eq!(exec_form("[\"/bin/app\", \"serve\"]"), "/bin/app serve");
}
