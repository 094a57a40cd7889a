#!/usr/bin/env python3
"""CDK entry point: builds the App and the icegate pipeline stack, checks it with cdk-nag, synthesises.

``cdk synth`` runs this with the context of ``cdk.json`` (and any ``-c key=value``); run directly
(``python app.py``) it reads the same ``cdk.json`` itself, so both produce the same template.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, Aspects, Tags
from cdk_nag import AwsSolutionsChecks

from cdk.pipeline_stack import PipelineStack

CDK_JSON = Path(__file__).resolve().with_name("cdk.json")
DEFAULT_STACK_NAME = "Icegate"


def default_context() -> dict[str, Any]:
    """The ``context`` of ``cdk.json``: stack settings and CDK feature flags."""
    context = json.loads(CDK_JSON.read_text(encoding="utf-8")).get("context", {})
    if not isinstance(context, dict):
        raise ValueError(f"{CDK_JSON}: 'context' must be an object")
    return context


def build_app(
    context: Mapping[str, Any] | None = None, *, outdir: str | None = None, nag: bool = True
) -> tuple[App, PipelineStack]:
    """The App with the pipeline stack; ``context`` overrides ``cdk.json`` (the CLI's ``-c`` overrides both)."""
    app = App(context={**default_context(), **(context or {})}, outdir=outdir)
    stack_name = str(app.node.try_get_context("stack_name") or DEFAULT_STACK_NAME)
    stack = PipelineStack(
        app,
        stack_name,
        description="icegate: quality-gated ingestion of scraped files into Apache Iceberg (S3, Step Functions, Glue)",
    )
    Tags.of(app).add("project", "icegate")
    if nag:
        # Findings surface as errors/warnings on synth; every accepted one is suppressed with a reason
        # next to the resource it concerns.
        Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return app, stack


def main() -> int:
    """Synthesise into ``cdk.out`` (or where the CDK CLI says) and report cdk-nag's findings."""
    app, _ = build_app(outdir=os.environ.get("CDK_OUTDIR", "cdk.out"))
    assembly = app.synth()
    errors = 0
    for stack in assembly.stacks:
        for message in stack.messages:
            level = message.entry.type
            if level in ("aws:cdk:error", "aws:cdk:warning"):
                print(f"{level.rsplit(':', 1)[-1].upper()} {message.id}: {message.entry.data}", file=sys.stderr)
                errors += level == "aws:cdk:error"
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
