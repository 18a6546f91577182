//! The kernel languages a runner offers: kernelspec names, display names and how to start each
//! language's driver. The drivers' sources are compiled into the binary and installed into the
//! runner's data directory at start, so a runner needs nothing but the language runtimes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cellgate_protocol::model::{KernelSpec, KernelSpecFile, KernelSpecs};

/// One file of a driver, shipped inside the binary.
#[derive(Debug, Clone, Copy)]
pub struct DriverFile {
    pub name: &'static str,
    pub source: &'static str,
}

/// One notebook language.
#[derive(Debug)]
pub struct Language {
    /// The kernelspec name, following Jupyter's habits (`python3`).
    pub kernel_name: &'static str,
    pub display_name: &'static str,
    /// The language's lower-case name, `spec.language` in the kernelspec.
    pub language: &'static str,
    /// The program that must exist for the process backend to offer this language.
    pub runtime: &'static str,
    /// The image name, without prefix and tag, that the Docker backend runs this language in.
    pub image: &'static str,
    /// The driver's command line; `{dir}` stands for the folder holding the driver's files.
    pub argv: &'static [&'static str],
    pub files: &'static [DriverFile],
}

impl Language {
    /// The driver's command line with `{dir}` replaced by `driver_dir`.
    pub fn command(&self, driver_dir: &Path) -> Vec<String> {
        let dir = driver_dir.display().to_string();
        self.argv
            .iter()
            .map(|arg| arg.replace("{dir}", &dir))
            .collect()
    }

    /// The folder under a drivers root where this language's files live.
    pub fn driver_dir(&self, drivers_root: &Path) -> PathBuf {
        drivers_root.join(self.language)
    }

    /// The kernelspec clients are shown, its command line resolved against `driver_dir`.
    pub fn kernelspec(&self, driver_dir: &Path) -> KernelSpec {
        KernelSpec {
            name: self.kernel_name.to_owned(),
            spec: KernelSpecFile {
                argv: self.command(driver_dir),
                display_name: self.display_name.to_owned(),
                language: self.language.to_owned(),
                interrupt_mode: "signal".to_owned(),
                env: BTreeMap::new(),
                metadata: serde_json::Map::new(),
            },
            resources: BTreeMap::new(),
        }
    }
}

pub static PYTHON: Language = Language {
    kernel_name: "python3",
    image: "python",
    display_name: "Python 3",
    language: "python",
    runtime: "python3",
    argv: &["python3", "-u", "{dir}/driver.py"],
    files: &[DriverFile {
        name: "driver.py",
        source: include_str!("../../images/python/driver.py"),
    }],
};

pub static JAVASCRIPT: Language = Language {
    kernel_name: "javascript",
    image: "javascript",
    display_name: "JavaScript (Node.js)",
    language: "javascript",
    runtime: "node",
    argv: &["sh", "{dir}/launch.sh"],
    files: &[
        DriverFile {
            name: "launch.sh",
            source: include_str!("../../images/javascript/launch.sh"),
        },
        DriverFile {
            name: "driver.js",
            source: include_str!("../../images/javascript/driver.js"),
        },
    ],
};

pub static BASH: Language = Language {
    kernel_name: "bash",
    image: "bash",
    display_name: "Bash",
    language: "bash",
    runtime: "bash",
    argv: &["bash", "{dir}/driver.sh"],
    files: &[DriverFile {
        name: "driver.sh",
        source: include_str!("../../images/bash/driver.sh"),
    }],
};

pub static PHP: Language = Language {
    kernel_name: "php",
    image: "php",
    display_name: "PHP",
    language: "php",
    runtime: "php",
    argv: &["sh", "{dir}/launch.sh"],
    files: &[
        DriverFile {
            name: "launch.sh",
            source: include_str!("../../images/php/launch.sh"),
        },
        DriverFile {
            name: "driver.php",
            source: include_str!("../../images/php/driver.php"),
        },
    ],
};

pub static RUBY: Language = Language {
    kernel_name: "ruby",
    image: "ruby",
    display_name: "Ruby",
    language: "ruby",
    runtime: "ruby",
    argv: &["ruby", "{dir}/driver.rb"],
    files: &[DriverFile {
        name: "driver.rb",
        source: include_str!("../../images/ruby/driver.rb"),
    }],
};

pub static R: Language = Language {
    kernel_name: "ir",
    image: "r",
    display_name: "R",
    language: "R",
    runtime: "Rscript",
    argv: &["sh", "{dir}/launch.sh"],
    files: &[
        DriverFile {
            name: "launch.sh",
            source: include_str!("../../images/r/launch.sh"),
        },
        DriverFile {
            name: "driver.R",
            source: include_str!("../../images/r/driver.R"),
        },
        DriverFile {
            name: "forward.pl",
            source: include_str!("../../images/common/forward.pl"),
        },
    ],
};

pub static OCTAVE: Language = Language {
    kernel_name: "octave",
    image: "octave",
    display_name: "Octave",
    language: "octave",
    runtime: "octave-cli",
    argv: &["sh", "{dir}/launch.sh"],
    files: &[
        DriverFile {
            name: "launch.sh",
            source: include_str!("../../images/octave/launch.sh"),
        },
        DriverFile {
            name: "forward.pl",
            source: include_str!("../../images/common/forward.pl"),
        },
        DriverFile {
            name: "__cellgate_driver__.m",
            source: include_str!("../../images/octave/__cellgate_driver__.m"),
        },
        DriverFile {
            name: "input.m",
            source: include_str!("../../images/octave/input.m"),
        },
        DriverFile {
            name: "keyboard.m",
            source: include_str!("../../images/octave/keyboard.m"),
        },
        DriverFile {
            name: "system.m",
            source: include_str!("../../images/octave/system.m"),
        },
        DriverFile {
            name: "finish.m",
            source: include_str!("../../images/octave/finish.m"),
        },
    ],
};

pub static JAVA: Language = Language {
    kernel_name: "java",
    image: "java",
    display_name: "Java (JShell)",
    language: "java",
    runtime: "jshell",
    argv: &["sh", "{dir}/launch.sh"],
    files: &[
        DriverFile {
            name: "launch.sh",
            source: include_str!("../../images/java/launch.sh"),
        },
        DriverFile {
            name: "CellgateDriver.java",
            source: include_str!("../../images/java/CellgateDriver.java"),
        },
    ],
};

/// Every language cellgate knows, in the order kernelspecs list them.
pub static ALL: &[&Language] = &[&PYTHON, &JAVASCRIPT, &BASH, &JAVA, &PHP, &RUBY, &R, &OCTAVE];

/// The languages one runner offers, with the default kernel first.
#[derive(Debug, Clone)]
pub struct LanguageSet {
    languages: Vec<&'static Language>,
}

impl LanguageSet {
    pub fn new(languages: Vec<&'static Language>) -> LanguageSet {
        LanguageSet { languages }
    }

    pub fn get(&self, kernel_name: &str) -> Option<&'static Language> {
        self.languages
            .iter()
            .copied()
            .find(|language| language.kernel_name == kernel_name)
    }

    pub fn default_name(&self) -> Option<&'static str> {
        self.languages.first().map(|language| language.kernel_name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &'static Language> + '_ {
        self.languages.iter().copied()
    }

    /// The kernelspecs of these languages, each command line resolved against the folder
    /// `driver_dir` gives for its language.
    pub fn kernelspecs(&self, driver_dir: impl Fn(&Language) -> PathBuf) -> KernelSpecs {
        KernelSpecs {
            default: self.default_name().unwrap_or("python3").to_owned(),
            kernelspecs: self
                .languages
                .iter()
                .map(|language| {
                    let spec = language.kernelspec(&driver_dir(language));
                    (language.kernel_name.to_owned(), spec)
                })
                .collect(),
        }
    }
}

/// Writes every driver's files under `root`, replacing stale copies from older builds.
pub fn install_drivers(root: &Path) -> std::io::Result<()> {
    for language in ALL {
        let dir = language.driver_dir(root);
        std::fs::create_dir_all(&dir)?;
        for file in language.files {
            let path = dir.join(file.name);
            let current = std::fs::read_to_string(&path).ok();
            if current.as_deref() != Some(file.source) {
                // Write beside and rename, so a driver starting right now never reads half a file.
                let partial = dir.join(format!(".{}.partial", file.name));
                std::fs::write(&partial, file.source)?;
                std::fs::rename(&partial, &path)?;
            }
        }
    }
    Ok(())
}

/// Whether `program` can be found on `PATH`.
pub fn on_path(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string of a JSON value, keys included.
    fn strings(value: &serde_json::Value, found: &mut Vec<String>) {
        match value {
            serde_json::Value::String(text) => found.push(text.clone()),
            serde_json::Value::Array(items) => items.iter().for_each(|item| strings(item, found)),
            serde_json::Value::Object(fields) => {
                for (key, field) in fields {
                    found.push(key.clone());
                    strings(field, found);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn kernelspecs_follow_jupyter_names() {
        let set = LanguageSet::new(ALL.to_vec());
        let specs = set.kernelspecs(|language| language.driver_dir(Path::new("/d")));
        assert_eq!(specs.default, "python3");
        assert_eq!(specs.kernelspecs["python3"].spec.language, "python");
        assert_eq!(specs.kernelspecs["javascript"].spec.language, "javascript");
        assert_eq!(specs.kernelspecs["bash"].spec.language, "bash");
    }

    #[test]
    fn kernelspecs_show_the_command_that_runs() {
        let root = std::env::temp_dir().join(format!("cellgate-specs-{}", uuid::Uuid::new_v4()));
        install_drivers(&root).unwrap();
        let specs =
            LanguageSet::new(ALL.to_vec()).kernelspecs(|language| language.driver_dir(&root));
        let mut found = Vec::new();
        strings(&serde_json::to_value(&specs).unwrap(), &mut found);
        let placeholders: Vec<&String> = found.iter().filter(|text| text.contains('{')).collect();
        assert!(placeholders.is_empty(), "{placeholders:?}");
        for language in ALL {
            let argv = &specs.kernelspecs[language.kernel_name].spec.argv;
            assert_eq!(*argv, language.command(&language.driver_dir(&root)));
            // The driver file a kernelspec names is there, where the runner installed it.
            let script = argv.last().unwrap();
            assert!(
                Path::new(script).is_file(),
                "{}: {argv:?}",
                language.kernel_name
            );
        }
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn command_substitutes_the_driver_folder() {
        let argv = PYTHON.command(Path::new("/opt/d/python"));
        assert_eq!(argv, ["python3", "-u", "/opt/d/python/driver.py"]);
    }

    #[test]
    fn install_writes_every_file() {
        let root = std::env::temp_dir().join(format!("cellgate-drivers-{}", uuid::Uuid::new_v4()));
        install_drivers(&root).unwrap();
        for language in ALL {
            for file in language.files {
                let written = std::fs::read_to_string(language.driver_dir(&root).join(file.name));
                assert_eq!(written.unwrap(), file.source);
            }
        }
        std::fs::remove_dir_all(root).unwrap();
    }
}
