"""`kokpit manifests`: print or write the kustomize base that installs kokpit into a real meta cluster."""

from __future__ import annotations

from pathlib import Path

import typer

from kokpit.cli._common import fail

__all__ = ["manifests"]


def manifests(
    namespace: str = typer.Option("kokpit-system", "--namespace", "-n", help="Namespace kokpit runs in."),
    image: str | None = typer.Option(None, "--image", help="kokpit image (default: this version's release)."),
    output_dir: Path | None = typer.Option(None, "--output-dir", "-o", help="Write the kustomize base here "
                                           "(kustomization.yaml and one file per part) instead of printing "
                                           "one YAML stream; `kubectl apply -k DIR` installs it."),
) -> None:
    """Render CRDs, namespace, ServiceAccounts, least-privilege RBAC, Deployments, PDBs and metrics Services."""
    from kokpit.manifests import DEFAULT_IMAGE, ManifestError, render_files

    try:
        files = render_files(namespace, image or DEFAULT_IMAGE)
    except ManifestError as e:
        fail(str(e))
    if output_dir is None:
        typer.echo("---\n".join(text for name, text in files.items() if name != "kustomization.yaml"), nl=False)
        return
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (output_dir / name).write_text(text)
    except OSError as e:
        fail(f"cannot write {output_dir}: {e.strerror or e}")
    typer.echo(f"wrote {len(files)} files to {output_dir}; install with: kubectl apply -k {output_dir}")
