//! Batch languages: the image a `run` job's language runs in, and the command that runs a
//! source file in it.

/// How one language runs a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLanguage {
    pub name: &'static str,
    /// The image, without prefix and tag.
    pub image: &'static str,
    /// The command before the file name and the job's arguments.
    pub command: &'static [&'static str],
    /// Compiled languages go through the image's `run` script, which exists only in the
    /// image; the process backend cannot run them.
    pub compiled: bool,
}

/// The compile-and-run script of the batch images (see `images/c/run`).
const RUN_SCRIPT: &[&str] = &["/opt/cellgate/run"];

pub const ALL: &[BatchLanguage] = &[
    interpreted("python", "python", &["python3"]),
    interpreted("javascript", "javascript", &["node"]),
    interpreted("bash", "bash", &["bash"]),
    interpreted("ruby", "ruby", &["ruby"]),
    interpreted("php", "php", &["php"]),
    interpreted("r", "r", &["Rscript"]),
    interpreted("octave", "octave", &["octave-cli", "--quiet"]),
    interpreted("java", "java", &["java"]),
    compiled("c", "c"),
    compiled("cpp", "c"),
    compiled("go", "go"),
    compiled("rust", "rust"),
];

const fn interpreted(
    name: &'static str,
    image: &'static str,
    command: &'static [&'static str],
) -> BatchLanguage {
    BatchLanguage {
        name,
        image,
        command,
        compiled: false,
    }
}

const fn compiled(name: &'static str, image: &'static str) -> BatchLanguage {
    BatchLanguage {
        name,
        image,
        command: RUN_SCRIPT,
        compiled: true,
    }
}

pub fn find(name: &str) -> Option<&'static BatchLanguage> {
    ALL.iter().find(|language| language.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_lists_the_same_languages_and_images() {
        let pairs: Vec<(&str, &str)> = ALL
            .iter()
            .map(|language| (language.name, language.image))
            .collect();
        assert_eq!(pairs, cellgate_protocol::job::BATCH_LANGUAGES);
    }

    #[test]
    fn compiled_languages_use_the_run_script() {
        assert_eq!(find("c").unwrap().command, RUN_SCRIPT);
        assert_eq!(find("cpp").unwrap().image, "c");
        assert_eq!(find("python").unwrap().command, &["python3"]);
        assert!(find("cobol").is_none());
    }
}
