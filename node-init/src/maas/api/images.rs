//! Boot resources (canonical/maas, `src/maasserver/api/boot_resources.py`):
//! an uploaded custom image is listed by `GET boot-resources/?type=uploaded`
//! (`name` is NAME, or `custom/NAME` as it was uploaded), and `GET
//! boot-resources/{id}/` has its sets, of which one must be `complete`
//! (every file whole, in every region from MAAS 3.5) before a machine can
//! be deployed from it.

use anyhow::Result;
use serde_json::Value;

use super::Api;

/// What MAAS holds of an image.
#[derive(Debug, PartialEq)]
pub enum Image {
    Missing { uploaded: Vec<String> },
    Incomplete { id: u64 },
    Complete { id: u64 },
}

impl Api {
    /// The uploaded image `name` (`custom/NAME`) for amd64.
    pub async fn image(&self, name: &str) -> Result<Image> {
        let bare = name.strip_prefix("custom/").unwrap_or(name);
        let list = self.get("boot-resources/", &[("type", "uploaded")]).await?;
        let list = list.as_array().cloned().unwrap_or_default();
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let found = list.iter().find(|r| {
            let n = s(r, "name");
            (n == bare || n == format!("custom/{bare}")) && s(r, "architecture").starts_with("amd64")
        });
        let Some(id) = found.and_then(|r| r.get("id")?.as_u64()) else {
            return Ok(Image::Missing { uploaded: list.iter().map(|r| s(r, "name")).collect() });
        };
        let r = self.get(&format!("boot-resources/{id}/"), &[]).await?;
        let complete = r
            .get("sets")
            .and_then(Value::as_object)
            .is_some_and(|sets| sets.values().any(|set| set.get("complete") == Some(&Value::Bool(true))));
        Ok(if complete { Image::Complete { id } } else { Image::Incomplete { id } })
    }
}
