//! Checkpoints as safetensors files: named `f32` tensors plus string metadata (step, epoch,
//! schedule and RNG state, preset, config) in the file's `__metadata__`.
//!
//! Writes are atomic: the file is written under a temporary name in the same directory, flushed to
//! disk, then renamed over the target, so a crash at any moment leaves either the previous
//! checkpoint or the new one, never a torn file.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::error::{Error, Result};

/// One named tensor: a shape and its row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// The PyTorch-style name, such as `blocks.0.conv_block1.conv1.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    /// data: shape.iter().product() values, row-major.
    pub data: Vec<f32>,
}

/// What a checkpoint file holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint {
    /// The tensors; [`load`] returns them sorted by name.
    pub tensors: Vec<NamedTensor>,
    /// Free-form string metadata (step, epoch, RNG state, preset, config...).
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// The tensor called `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Stores `value` (as its `Display` text) under `key`, replacing any previous value.
    pub fn set_meta(&mut self, key: &str, value: impl std::fmt::Display) {
        self.metadata.insert(key.to_string(), value.to_string());
    }

    /// The metadata value under `key` parsed as `T`; the error names the key and the value.
    pub fn meta<T: FromStr>(&self, key: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let op = "checkpoint metadata";
        let value = self
            .metadata
            .get(key)
            .ok_or_else(|| Error::invalid(op, format!("no entry {key:?}")))?;
        value.parse().map_err(|e| {
            Error::invalid(op, format!("entry {key:?} = {value:?} does not parse: {e}"))
        })
    }

    /// Checks that every expected `(name, shape)` is present with that shape and that there is no
    /// other tensor. All problems are reported at once, each naming the tensor and both shapes;
    /// `path` only names the file in the error.
    pub fn validate(&self, path: &Path, expected: &[(String, Vec<usize>)]) -> Result<()> {
        let mut problems = Vec::new();
        for (name, shape) in expected {
            match self.tensor(name) {
                None => problems.push(format!("missing tensor {name} (model expects {shape:?})")),
                Some(t) if &t.shape != shape => problems.push(format!(
                    "tensor {name} has shape {:?} in the checkpoint, the model expects {shape:?}",
                    t.shape
                )),
                Some(_) => {}
            }
        }
        let known: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        for t in self
            .tensors
            .iter()
            .filter(|t| !known.contains(t.name.as_str()))
        {
            problems.push(format!(
                "unexpected tensor {} {:?} (not in the model)",
                t.name, t.shape
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Mismatch {
                path: path.to_path_buf(),
                problems,
            })
        }
    }
}

/// A tensor as safetensors sees it: little-endian `f32` bytes, produced one tensor at a time while
/// the file is written (a full copy of a 78-million-parameter model is never made).
struct F32View<'a>(&'a NamedTensor);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn data_len(&self) -> usize {
        self.0.data.len() * 4
    }
}

/// Writes `checkpoint` to `path` atomically (temporary file in the same directory, fsync,
/// rename). Refuses duplicate names and tensors whose data length is not the product of their
/// shape; on any error the file previously at `path` is untouched.
pub fn save(path: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let op = "save checkpoint";
    let mut names = HashSet::new();
    for t in &checkpoint.tensors {
        if !names.insert(t.name.as_str()) {
            return Err(Error::invalid(
                op,
                format!("tensor {} appears twice", t.name),
            ));
        }
        let expected: usize = t.shape.iter().product();
        if t.data.len() != expected {
            return Err(Error::invalid(
                op,
                format!(
                    "tensor {} has {} values, shape {:?} needs {expected}",
                    t.name,
                    t.data.len(),
                    t.shape
                ),
            ));
        }
    }
    let views = checkpoint
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), F32View(t)));
    let metadata: HashMap<String, String> = checkpoint.metadata.clone().into_iter().collect();
    write_atomically(path, |tmp| {
        safetensors::serialize_to_file(views, Some(metadata), tmp)
            .map_err(|e| Error::format(tmp, format!("writing safetensors: {e}")))
    })
}

/// Reads a checkpoint written by [`save`] (or any safetensors file of `f32` tensors). Tensors
/// come back sorted by name. A file that is not valid safetensors, or holds another dtype, is an
/// error naming the path.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let corrupt = |msg: String| Error::format(path, format!("not a valid checkpoint: {msg}"));
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut tensors = Vec::with_capacity(file.len());
    for (name, view) in file.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(corrupt(format!(
                "tensor {name} is {:?}, expected F32",
                view.dtype()
            )));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.push(NamedTensor {
            name,
            shape: view.shape().to_vec(),
            data,
        });
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let metadata = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(Checkpoint { tensors, metadata })
}

/// Copies the checkpoint at `from` to `to` atomically, as [`save`] writes: a crash leaves the
/// previous file at `to` or the whole copy, never part of it.
pub fn copy(from: &Path, to: &Path) -> Result<()> {
    write_atomically(to, |tmp| {
        std::fs::copy(from, tmp)
            .map(|_| ())
            .map_err(|e| Error::io(from, e))
    })
}

/// The temporary name `path` is written under before the rename: hidden, in the same directory
/// (a rename within one file system is atomic), and unique to this process.
fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Runs `write` on a temporary path beside `path`, flushes that file to disk, and renames it over
/// `path`. If `write` fails the temporary file is removed and `path` is left as it was.
fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temporary_path(path);
    let result = write(&tmp).and_then(|()| {
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    });
    if result.is_err() {
        // Best effort: the write already failed, and a leftover is harmless (never read).
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable: flush the directory entry.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let tensor = |name: &str, shape: Vec<usize>, seed: u32| {
            let n = shape.iter().product::<usize>() as u32;
            // Awkward values on purpose: negative zero, subnormals, extremes, a NaN payload.
            let mut data: Vec<f32> = (0..n)
                .map(|i| {
                    f32::from_bits(i.wrapping_mul(2_654_435_761).wrapping_add(seed) & 0xbf7f_ffff)
                })
                .collect();
            if n > 3 {
                data[0] = -0.0;
                data[1] = f32::MIN_POSITIVE / 4.0;
                data[2] = f32::MAX;
                data[3] = f32::from_bits(0x7fc0_1234);
            }
            NamedTensor {
                name: name.into(),
                shape,
                data,
            }
        };
        Checkpoint {
            tensors: vec![
                tensor("blocks.0.conv_block1.conv1.weight", vec![8, 3, 3, 3], 1),
                tensor("fc1.bn.running_var", vec![16], 2),
                tensor("fc1.weight", vec![16, 32], 3),
                tensor("scalar", vec![], 4),
            ],
            metadata: BTreeMap::from([
                ("epoch".to_string(), "3".to_string()),
                ("step".to_string(), "600".to_string()),
                ("preset".to_string(), "tiny".to_string()),
            ]),
        }
    }

    fn bits(c: &Checkpoint) -> Vec<(String, Vec<usize>, Vec<u32>)> {
        c.tensors
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.shape.clone(),
                    t.data.iter().map(|v| v.to_bits()).collect(),
                )
            })
            .collect()
    }

    fn expected(c: &Checkpoint) -> Vec<(String, Vec<usize>)> {
        c.tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect()
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let c = sample();
        save(&path, &c).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(bits(&back), bits(&c));
        assert_eq!(back.metadata, c.metadata);
        assert_eq!(back.meta::<u64>("step").unwrap(), 600);
        let err = back.meta::<u64>("preset").unwrap_err().to_string();
        assert!(err.contains("\"preset\" = \"tiny\""), "{err}");
        assert!(back.meta::<u64>("absent").is_err());
        back.validate(&path, &expected(&c)).unwrap();
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A copy (as best.safetensors is made) is the same file, written the same way.
        let best = dir.path().join("best.safetensors");
        copy(&path, &best).unwrap();
        assert_eq!(std::fs::read(&best).unwrap(), std::fs::read(&path).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        let err = copy(&dir.path().join("absent"), &best).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
        assert_eq!(bits(&load(&best).unwrap()), bits(&c));
    }

    #[test]
    fn a_failed_write_leaves_the_previous_checkpoint_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let c = sample();
        save(&path, &c).unwrap();
        let before = std::fs::read(&path).unwrap();

        // A crash before the rename: half a file under the temporary name, then an error.
        let err = write_atomically(&path, |tmp| {
            std::fs::write(tmp, &before[..before.len() / 2]).unwrap();
            Err(Error::invalid("test", "interrupted"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left"
        );

        // A stray temporary file from a killed run is ignored, and the next save still works.
        std::fs::write(dir.path().join(".last.safetensors.tmp-1"), b"torn").unwrap();
        assert_eq!(bits(&load(&path).unwrap()), bits(&c));
        let mut newer = c.clone();
        newer.set_meta("step", 800u64);
        save(&path, &newer).unwrap();
        assert_eq!(load(&path).unwrap().meta::<u64>("step").unwrap(), 800);
    }

    #[test]
    fn corrupt_and_missing_files_are_errors_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        save(&path, &sample()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for (what, contents) in [
            ("truncated", bytes[..bytes.len() - 5].to_vec()),
            ("garbage", b"definitely not a safetensors file".to_vec()),
            ("empty", Vec::new()),
        ] {
            std::fs::write(&path, contents).unwrap();
            let err = load(&path).unwrap_err().to_string();
            assert!(
                err.contains("bad.safetensors") && err.contains("not a valid checkpoint"),
                "{what}: {err}"
            );
        }
        let missing = dir.path().join("missing.safetensors");
        let err = load(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.safetensors"), "{err}");
    }

    #[test]
    fn validate_names_every_mismatch_with_both_shapes() {
        let path = Path::new("runs/x/best.safetensors");
        let c = sample();
        let mut model = expected(&c);
        model[2].1 = vec![32, 16]; // fc1.weight transposed
        model.remove(0); // the checkpoint has a tensor the model lacks
        model.push(("fc2.weight".into(), vec![8, 16])); // the model has one the checkpoint lacks
        let err = c.validate(path, &model).unwrap_err().to_string();
        assert!(err.contains("runs/x/best.safetensors"), "{err}");
        assert!(err.contains("tensor fc1.weight has shape [16, 32] in the checkpoint, the model expects [32, 16]"), "{err}");
        assert!(
            err.contains("missing tensor fc2.weight (model expects [8, 16])"),
            "{err}"
        );
        assert!(
            err.contains("unexpected tensor blocks.0.conv_block1.conv1.weight [8, 3, 3, 3]"),
            "{err}"
        );
    }

    #[test]
    fn save_refuses_inconsistent_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let mut c = sample();
        c.tensors[1].shape = vec![17];
        let err = save(&path, &c).unwrap_err().to_string();
        assert!(
            err.contains("fc1.bn.running_var has 16 values, shape [17] needs 17"),
            "{err}"
        );
        let mut c = sample();
        c.tensors[1].name = c.tensors[0].name.clone();
        let err = save(&path, &c).unwrap_err().to_string();
        assert!(err.contains("appears twice"), "{err}");
        assert!(!path.exists());
    }
}
