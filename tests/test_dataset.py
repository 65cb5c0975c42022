"""Token shards (midilm.data.shards) and the torch Dataset over them (midilm.data.dataset):
the three reading modes, BOS/EOS packing, the collator, memory mapping, bad directories."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from midilm.data import SPLITS, DatasetError, TokenCollator, TokenDataset, read_split
from midilm.data.shards import ShardWriter, shards_digest, token_dtype

SEQUENCES = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]


def write_dataset(directory, sequences=SEQUENCES, *, kind="remi", bos=1, eos=2, vocab=300):
    """A dataset directory by hand: the same sequences in every split."""
    directory.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        writer = ShardWriter(directory, split, vocab)
        writer.extend(sequences)
        writer.close()
    manifest = {
        "format": "midilm-dataset",
        "tokenizer": {"kind": kind},
        "special_ids": {"pad": 0, "bos": bos, "eos": eos},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


@pytest.mark.parametrize(
    ("vocab", "dtype"), [(200, "uint8"), (256, "uint8"), (257, "uint16"), (70_000, "uint32")]
)
def test_token_dtype_follows_the_vocabulary_size(vocab, dtype):
    assert token_dtype(vocab) == np.dtype(dtype)


def test_shards_are_what_numpy_save_writes_and_load_memory_mapped(tmp_path):
    writer = ShardWriter(tmp_path, "train", 300)
    writer.append([1, 2, 3])
    writer.append_many(np.array([4, 5, 6, 7]), [1, 3])
    writer.append([])
    assert (writer.num_sequences, writer.num_tokens) == (4, 7)
    writer.close()
    expected = io.BytesIO()
    np.save(expected, np.array([1, 2, 3, 4, 5, 6, 7], dtype="<u2"))
    assert (tmp_path / "train.tokens.npy").read_bytes() == expected.getvalue()
    tokens, offsets = read_split(tmp_path, "train")
    assert isinstance(tokens, np.memmap) and isinstance(offsets, np.memmap)
    assert offsets.tolist() == [0, 3, 4, 7, 7]
    assert not tokens.flags.writeable


def test_a_writer_holds_nothing_until_closed_and_aborting_leaves_no_file(tmp_path):
    writer = ShardWriter(tmp_path, "valid", 300)
    writer.append([1, 2])
    assert not (tmp_path / "valid.tokens.npy").exists()
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_ids_outside_the_vocabulary_are_refused(tmp_path):
    writer = ShardWriter(tmp_path, "train", 10)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        writer.append([3, 10])
    with pytest.raises(ValueError, match="add up"):
        writer.append_many(np.array([1, 2]), [3])
    writer.abort()


def test_the_digest_covers_every_split_and_changes_with_the_content():
    split = {"dtype": "uint16", "tokens_sha256": "a" * 64, "offsets_sha256": "b" * 64}
    digest = shards_digest(dict.fromkeys(SPLITS, split))
    changed = shards_digest({**dict.fromkeys(SPLITS, split), "test": {**split, "dtype": "u8"}})
    assert len(digest) == 64 and digest != changed


def test_sequences_mode_gives_each_stored_sequence_cut_to_seq_len(tmp_path):
    data = TokenDataset(write_dataset(tmp_path / "d"), "train", seq_len=3, mode="sequences")
    assert len(data) == 4
    assert [data[i]["input_ids"].tolist() for i in range(4)] == [
        [5, 6, 7],
        [8, 9],
        [10, 11, 12],
        [14],
    ]
    assert data[0]["input_ids"].dtype == torch.long
    with pytest.raises(IndexError):
        data[4]


def test_packed_mode_wraps_sequences_in_bos_eos_and_cuts_consecutive_chunks(tmp_path):
    data = TokenDataset(write_dataset(tmp_path / "d"), "valid", seq_len=4, mode="packed")
    stream = [1, 5, 6, 7, 2, 1, 8, 9, 2, 1, 10, 11, 12, 13, 2, 1, 14, 2]
    assert len(data) == len(stream) // 4
    chunks = [data[i]["input_ids"].tolist() for i in range(len(data))]
    assert chunks == [stream[i : i + 4] for i in range(0, 16, 4)]


def test_packed_mode_without_bos_eos_is_the_raw_stream(tmp_path):
    data = TokenDataset(
        write_dataset(tmp_path / "d", bos=None, eos=None), "test", seq_len=5, mode="packed"
    )
    chunks = [data[i]["input_ids"].tolist() for i in range(len(data))]
    assert chunks == [[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]


def test_random_mode_crops_the_stream_the_same_way_for_the_same_seed(tmp_path):
    directory = write_dataset(tmp_path / "d")
    one = TokenDataset(directory, "train", seq_len=5, mode="random", seed=3)
    two = TokenDataset(directory, "train", seq_len=5, mode="random", seed=3)
    other = TokenDataset(directory, "train", seq_len=5, mode="random", seed=4)
    crops = [one[i]["input_ids"].tolist() for i in range(len(one))]
    assert crops == [two[i]["input_ids"].tolist() for i in range(len(two))]
    assert crops != [other[i]["input_ids"].tolist() for i in range(len(other))]
    stream = [1, 5, 6, 7, 2, 1, 8, 9, 2, 1, 10, 11, 12, 13, 2, 1, 14, 2]
    windows = {tuple(stream[i : i + 5]) for i in range(len(stream) - 4)}
    assert all(tuple(c) in windows for c in crops)


def test_the_default_mode_follows_the_tokenizer_kind(tmp_path):
    assert TokenDataset(write_dataset(tmp_path / "m", kind="mmm"), seq_len=4).mode == "sequences"
    assert TokenDataset(write_dataset(tmp_path / "r", kind="remi"), seq_len=4).mode == "packed"


def test_the_collator_pads_and_masks_padding_out_of_the_loss(tmp_path):
    data = TokenDataset(write_dataset(tmp_path / "d"), "train", seq_len=8, mode="sequences")
    batch = TokenCollator(pad_id=0, pad_to_multiple_of=4)([data[0], data[1], data[3]])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 9, 0, 0], [14, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7, -100], [8, 9, -100, -100], [14] + [-100] * 3]


def test_a_torch_dataloader_batches_it(tmp_path):
    data = TokenDataset(write_dataset(tmp_path / "d"), "train", seq_len=4, mode="packed")
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=TokenCollator(0))
    shapes = [tuple(batch["input_ids"].shape) for batch in loader]
    assert shapes == [(2, 4), (2, 4)]


def test_bad_directories_and_splits_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="no manifest"):
        TokenDataset(tmp_path, "train", seq_len=4)
    directory = write_dataset(tmp_path / "d")
    with pytest.raises(DatasetError, match="unknown split"):
        TokenDataset(directory, "dev", seq_len=4)
    with pytest.raises(DatasetError, match="fewer than seq_len"):
        TokenDataset(directory, "train", seq_len=100, mode="packed")
    with pytest.raises(ValueError, match="seq_len"):
        TokenDataset(directory, "train", seq_len=1)
    (directory / "test.offsets.npy").unlink()
    with pytest.raises(DatasetError, match="missing"):
        TokenDataset(directory, "test", seq_len=4)
    np.save(directory / "valid.offsets.npy", np.array([0, 2], dtype=np.int64))
    with pytest.raises(DatasetError, match="do not match"):
        TokenDataset(directory, "valid", seq_len=4)
    empty = tmp_path / "empty"
    write_dataset(empty, sequences=[])
    with pytest.raises(DatasetError, match="holds no sequence"):
        TokenDataset(empty, "train", seq_len=4)
