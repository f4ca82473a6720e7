//! What each image offers, from the labels `vana-sandbox image build` writes: the languages it
//! has toolchains for and its filesystem layout. Looked up once per executor and kept per image
//! id; containers are created from that id, so the facts always describe the image that runs.

use std::collections::BTreeMap;

use bollard::Docker;

use crate::image::{DEFAULT_IMAGE, FULL_IMAGE};

/// Label: the languages whose toolchains the image has (canonical names, comma-separated).
pub const LABEL_LANGUAGES: &str = "vana-sandbox.languages";
/// Label: `workspace` when the image's `/tmp` is a link into `/workspace` (one writable place,
/// one disk budget).
pub const LABEL_TMP: &str = "vana-sandbox.tmp";
/// Label: the layout version of images we build ([`IMAGE_VERSION`]).
pub const LABEL_VERSION: &str = "vana-sandbox.image";
/// The layout version `image build` writes now; an image of ours with another one is rebuilt.
pub const IMAGE_VERSION: &str = "5";
/// Where `/tmp` points in images with [`LABEL_TMP`] = `workspace`.
pub const TMP_IN_WORKSPACE: &str = "/workspace/.tmp";

/// One image, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageInfo {
    /// The name it was looked up by.
    pub name: String,
    /// Its id (containers are created from it).
    pub id: String,
    /// Languages it has toolchains for; `None`: not an image of ours (no label), unknown.
    pub languages: Option<Vec<String>>,
    /// `/tmp` is a link into `/workspace`.
    pub tmp_in_workspace: bool,
}

impl ImageInfo {
    fn has(&self, language: &str) -> Option<bool> {
        self.languages
            .as_ref()
            .map(|l| l.iter().any(|x| x == language))
    }
}

/// The images an executor may use, by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Images {
    by_name: BTreeMap<String, ImageInfo>,
    default: String,
    /// Explicit language-to-image map (`DockerConfig::images`).
    map: BTreeMap<String, String>,
}

impl Images {
    /// Resolves the default image, [`FULL_IMAGE`] and every mapped image (absent ones are left
    /// out; asking for their languages says so).
    pub(crate) async fn resolve(
        docker: &Docker,
        default: &str,
        map: &BTreeMap<String, String>,
    ) -> Self {
        let mut by_name = BTreeMap::new();
        let names = std::iter::once(default)
            .chain(std::iter::once(FULL_IMAGE))
            .chain(map.values().map(String::as_str));
        for name in names {
            if by_name.contains_key(name) {
                continue;
            }
            let Ok(inspect) = docker.inspect_image(name).await else {
                continue;
            };
            let Some(id) = inspect.id else { continue };
            let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
            by_name.insert(
                name.to_string(),
                ImageInfo {
                    name: name.to_string(),
                    id,
                    languages: labels.get(LABEL_LANGUAGES).map(|l| {
                        l.split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect()
                    }),
                    tmp_in_workspace: labels.get(LABEL_TMP).is_some_and(|v| v == "workspace"),
                },
            );
        }
        Self {
            by_name,
            default: default.to_string(),
            map: map.clone(),
        }
    }

    /// The default image, when present.
    pub(crate) fn default_image(&self) -> Option<&ImageInfo> {
        self.by_name.get(&self.default)
    }

    /// The image programs of `language` run in: the one mapped to it; else the default image
    /// unless its labels say it lacks the language; else the full image when it has it. The
    /// error names the image and how to get one with the language.
    pub(crate) fn for_language(&self, language: &str) -> Result<&ImageInfo, String> {
        if let Some(name) = self.map.get(language) {
            let image = self.by_name.get(name).ok_or_else(|| {
                format!("the Docker image {name} (configured for {language}) is not present: pull or build it")
            })?;
            if image.has(language) == Some(false) {
                return Err(lacks(image, language, "build one with it (`vana-sandbox image build --full` has Go and Rust's linker)"));
            }
            return Ok(image);
        }
        let Some(default) = self.default_image() else {
            return Err(format!(
                "the Docker image {} is missing: build it with `vana-sandbox image build`",
                self.default
            ));
        };
        if default.has(language) != Some(false) {
            return Ok(default);
        }
        if let Some(full) = self
            .by_name
            .get(FULL_IMAGE)
            .filter(|f| f.has(language) == Some(true))
        {
            return Ok(full);
        }
        let how = if self.default == DEFAULT_IMAGE {
            format!(
                "build the image that has it with `vana-sandbox image build --full` ({FULL_IMAGE}, \
                 used for {language} automatically)"
            )
        } else {
            "build one with it (`vana-sandbox image build --full`)".to_string()
        };
        Err(lacks(
            default,
            language,
            &format!("{how}, or map {language} to an image of yours (DockerConfig.images)"),
        ))
    }
}

/// "The image lacks the language; how to get one."
fn lacks(image: &ImageInfo, language: &str, how: &str) -> String {
    let has = image
        .languages
        .as_ref()
        .map(|l| l.join(", "))
        .unwrap_or_default();
    format!(
        "the Docker image {} ({}) has no {language} toolchain (it has: {has}); {how}",
        image.name,
        short(&image.id)
    )
}

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, languages: Option<&[&str]>) -> ImageInfo {
        ImageInfo {
            name: name.into(),
            id: format!("sha256:{name}0123456789abcdef"),
            languages: languages.map(|l| l.iter().map(|s| s.to_string()).collect()),
            tmp_in_workspace: true,
        }
    }

    fn images(list: Vec<ImageInfo>, map: &[(&str, &str)]) -> Images {
        Images {
            by_name: list.into_iter().map(|i| (i.name.clone(), i)).collect(),
            default: DEFAULT_IMAGE.into(),
            map: map
                .iter()
                .map(|(l, i)| (l.to_string(), i.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_language_goes_to_the_image_that_has_it() {
        let base = info(DEFAULT_IMAGE, Some(&["python", "javascript", "bash"]));
        let full = info(
            FULL_IMAGE,
            Some(&["python", "javascript", "bash", "go", "rust"]),
        );
        let only_base = images(vec![base.clone()], &[]);
        assert_eq!(
            only_base.for_language("python").map(|i| &i.name),
            Ok(&base.name)
        );
        let err = only_base.for_language("go").err().unwrap_or_default();
        assert!(err.contains("has no go toolchain"), "{err}");
        assert!(err.contains("vana-sandbox image build --full"), "{err}");
        assert!(err.contains(DEFAULT_IMAGE), "{err}");
        let both = images(vec![base.clone(), full.clone()], &[]);
        assert_eq!(both.for_language("go").map(|i| &i.name), Ok(&full.name));
        assert_eq!(both.for_language("bash").map(|i| &i.name), Ok(&base.name));
        // An image without our labels is trusted with every language; a mapped image wins.
        let foreign = images(vec![info(DEFAULT_IMAGE, None)], &[("python", "py:3")]);
        assert!(foreign.for_language("go").is_ok());
        let err = foreign.for_language("python").err().unwrap_or_default();
        assert!(err.contains("py:3"), "{err}");
        let mapped = images(vec![base.clone()], &[("go", DEFAULT_IMAGE)]);
        let err = mapped.for_language("go").err().unwrap_or_default();
        assert!(err.contains("has no go toolchain"), "{err}");
        let none = images(vec![], &[]);
        let err = none.for_language("python").err().unwrap_or_default();
        assert!(err.contains("vana-sandbox image build"), "{err}");
    }
}
