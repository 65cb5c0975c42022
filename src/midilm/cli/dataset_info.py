"""``midilm dataset-info DATASET``: what a prepared dataset holds, read from its manifest."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["dataset_info"]


@click.command("dataset-info")
@click.argument("directory", metavar="DATASET", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest itself (JSON).")
@click.option(
    "--verify",
    is_flag=True,
    help="Also read the shards and check them against the manifest's SHA-256 sums.",
)
def dataset_info(directory: Path, as_json: bool, verify: bool) -> None:
    """Summarize a dataset made by 'midilm prepare': tokenizer, sources, files accepted and
    rejected by reason, examples, pieces / sequences / tokens per split, digest.

    The files left out are listed one per line, with their reason, in
    DATASET/rejected.jsonl.
    """
    import json

    from midilm.data.info import format_manifest, verify_shards
    from midilm.data.shards import DatasetError, read_manifest

    manifest = read_manifest(directory)
    if manifest.get("format") != "midilm-dataset":
        raise DatasetError(f"{directory / 'manifest.json'}: not a manifest made by midilm prepare")
    if as_json:
        click.echo(json.dumps(manifest, indent=2, ensure_ascii=False))
    else:
        click.echo(format_manifest(manifest, directory))
    if verify:
        problems = verify_shards(directory, manifest)
        if problems:
            raise DatasetError(f"{directory}: " + "; ".join(problems))
        click.echo("verified: the shards match the manifest", err=True)
