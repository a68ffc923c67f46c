//! Readers and writers of the binary formats, and the errors on bad input.

use std::fs;
use std::path::Path;

use cifar_data::format::{read_records, write_records, IMAGE_BYTES, PLANE};
use cifar_data::{make_batch, Augment, Dataset, Error, Format, Records};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `n` random records of `format`.
fn random_records(format: Format, n: usize, seed: u64) -> Records {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut images = vec![0u8; n * IMAGE_BYTES];
    rng.fill(&mut images[..]);
    let fine = (0..n)
        .map(|_| rng.random_range(0..format.num_classes()) as u8)
        .collect();
    let coarse = match format {
        Format::Cifar100 => Some((0..n).map(|_| rng.random_range(0..20u8)).collect()),
        Format::Cifar10 => None,
    };
    Records {
        images,
        fine,
        coarse,
    }
}

/// Writes a complete dataset directory of `format` with `n_train` training records (split over the
/// files of the format) and `n_test` test records; returns the records written.
fn write_dataset(dir: &Path, format: Format, n_train: usize, n_test: usize) -> (Records, Records) {
    fs::create_dir_all(dir).unwrap();
    let train = random_records(format, n_train, 1);
    let test = random_records(format, n_test, 2);
    let files = format.train_files();
    let per_file = n_train.div_ceil(files.len());
    for (k, file) in files.iter().enumerate() {
        let (a, b) = (k * per_file, ((k + 1) * per_file).min(n_train));
        let part = Records {
            images: train.images[a * IMAGE_BYTES..b * IMAGE_BYTES].to_vec(),
            fine: train.fine[a..b].to_vec(),
            coarse: train.coarse.as_ref().map(|c| c[a..b].to_vec()),
        };
        write_records(&dir.join(file), format, &part).unwrap();
    }
    write_records(&dir.join(format.test_files()[0]), format, &test).unwrap();
    let names = |n: usize| (0..n).map(|i| format!("class_{i}\n")).collect::<String>();
    fs::write(
        dir.join(format.fine_names_file()),
        names(format.num_classes()),
    )
    .unwrap();
    if let Some(f) = format.coarse_names_file() {
        fs::write(dir.join(f), names(20)).unwrap();
    }
    (train, test)
}

#[test]
fn records_round_trip_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    for format in [Format::Cifar100, Format::Cifar10] {
        let records = random_records(format, 7, 3);
        let path = tmp.path().join(format.archive_name());
        write_records(&path, format, &records).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().len() as usize,
            7 * format.record_size()
        );
        assert_eq!(read_records(&path, format).unwrap(), records);
    }
}

#[test]
fn dataset_loads_both_formats_with_counts() {
    let tmp = tempfile::tempdir().unwrap();
    for (format, n_train) in [(Format::Cifar100, 13), (Format::Cifar10, 23)] {
        let dir = tmp.path().join(format.dir_name());
        let (train, test) = write_dataset(&dir, format, n_train, 5);
        // Loading from the parent finds the nested directory.
        let data = Dataset::load(tmp.path(), format).unwrap();
        assert_eq!(data.dir, dir);
        assert_eq!(data.train.len(), n_train);
        assert_eq!(data.test.len(), 5);
        assert_eq!(data.train.images(), &train.images[..]);
        assert_eq!(data.test.images(), &test.images[..]);
        let fine: Vec<u32> = train.fine.iter().map(|&l| u32::from(l)).collect();
        assert_eq!(data.train.fine(), &fine[..]);
        assert_eq!(data.train.coarse().is_some(), format == Format::Cifar100);
        assert_eq!(data.fine_names.len(), format.num_classes());
        let summary = data.to_string();
        assert!(
            summary.contains(&format!("{n_train} training and 5 test images")),
            "{summary}"
        );
        assert!(Dataset::is_complete(tmp.path(), format));
    }
}

#[test]
fn colour_planes_land_in_their_channels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    write_dataset(&dir, Format::Cifar100, 2, 1);
    // Image 0 of the test split: red plane 255, green plane 0, blue plane 51.
    let mut records = read_records(&dir.join("test.bin"), Format::Cifar100).unwrap();
    records.images[..PLANE].fill(255);
    records.images[PLANE..2 * PLANE].fill(0);
    records.images[2 * PLANE..].fill(51);
    write_records(&dir.join("test.bin"), Format::Cifar100, &records).unwrap();
    let data = Dataset::load(&dir, Format::Cifar100).unwrap();
    let batch = make_batch(&data.test, &[0], Augment::None, 0, 0, 0).unwrap();
    assert_eq!(batch.images.dims(), &[1, 3, 32, 32]);
    let x = batch.images.as_slice().unwrap();
    let expected = [1.0, -1.0, (51.0 - 127.5) / 127.5];
    for (c, want) in expected.iter().enumerate() {
        assert!(
            x[c * PLANE..(c + 1) * PLANE].iter().all(|v| v == want),
            "channel {c}"
        );
    }
}

fn message(e: Error) -> String {
    e.to_string()
}

#[test]
fn missing_directory_names_path_and_download_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nowhere");
    let msg = message(Dataset::load(&dir, Format::Cifar100).unwrap_err());
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(msg.contains("trainer download --dataset cifar100"), "{msg}");
    assert!(
        msg.contains("`trainer download --dataset cifar100 --archive FILE`")
            && msg.contains("cifar-100-binary.tar.gz"),
        "{msg}"
    );
    let msg = message(Dataset::load(&dir, Format::Cifar10).unwrap_err());
    assert!(msg.contains("trainer download --dataset cifar10"), "{msg}");
}

#[test]
fn missing_file_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    write_dataset(tmp.path(), Format::Cifar10, 10, 2);
    fs::remove_file(tmp.path().join("data_batch_4.bin")).unwrap();
    let err = Dataset::load(tmp.path(), Format::Cifar10).unwrap_err();
    assert!(matches!(&err, Error::Missing { path, .. } if path.ends_with("data_batch_4.bin")));
    assert!(message(err).contains("trainer download --dataset cifar10"));
}

#[test]
fn empty_and_partial_files_name_size_and_record_size() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("train.bin");
    fs::write(&path, []).unwrap();
    let msg = message(read_records(&path, Format::Cifar100).unwrap_err());
    assert!(
        msg.contains("train.bin") && msg.contains("empty") && msg.contains("3074"),
        "{msg}"
    );
    fs::write(&path, vec![0u8; 3074 * 2 + 5]).unwrap();
    let msg = message(read_records(&path, Format::Cifar100).unwrap_err());
    assert!(
        msg.contains("train.bin") && msg.contains("6153 bytes") && msg.contains("3074-byte"),
        "{msg}"
    );
    // 6153 = 2 * 3073 + 7 is not a whole number of CIFAR-10 records either.
    let msg = message(read_records(&path, Format::Cifar10).unwrap_err());
    assert!(msg.contains("3073-byte"), "{msg}");
}

#[test]
fn out_of_range_labels_name_file_record_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("x.bin");
    let cases = [
        (Format::Cifar100, 0, 20u8, "coarse label 20"),
        (Format::Cifar100, 1, 100u8, "fine label 100"),
        (Format::Cifar10, 0, 10u8, "class label 10"),
    ];
    for (format, byte, value, what) in cases {
        let records = random_records(format, 4, 5);
        write_records(&path, format, &records).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[2 * format.record_size() + byte] = value;
        fs::write(&path, bytes).unwrap();
        let msg = message(read_records(&path, format).unwrap_err());
        assert!(
            msg.contains("x.bin") && msg.contains("record 2") && msg.contains(what),
            "{msg}"
        );
    }
}

#[test]
fn label_name_files_need_the_right_count() {
    let tmp = tempfile::tempdir().unwrap();
    write_dataset(tmp.path(), Format::Cifar100, 3, 3);
    let names: String = (0..19).map(|i| format!("c{i}\n")).collect();
    fs::write(tmp.path().join("coarse_label_names.txt"), names).unwrap();
    let msg = message(Dataset::load(tmp.path(), Format::Cifar100).unwrap_err());
    assert!(
        msg.contains("coarse_label_names.txt") && msg.contains("19 label names, expected 20"),
        "{msg}"
    );
}

#[test]
fn writer_rejects_inconsistent_records() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("w.bin");
    let mut r = random_records(Format::Cifar100, 3, 9);
    r.images.pop();
    assert!(matches!(
        write_records(&path, Format::Cifar100, &r),
        Err(Error::Invalid { .. })
    ));
    let r = random_records(Format::Cifar100, 3, 9);
    assert!(matches!(
        write_records(&path, Format::Cifar10, &r),
        Err(Error::Invalid { .. })
    ));
    assert!(!path.exists());
}
