"""The Glue database that serves as the Iceberg catalog's namespace."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_glue as glue
from aws_cdk import aws_s3 as s3
from constructs import Construct

from icegate.constants import LEDGER_TABLE, WAREHOUSE_PREFIX


class CatalogConstruct(Construct):
    """One Glue database (= Iceberg namespace). The loader creates its tables on first load.

    The database outlives the stack (its tables' entries point at data in the retained lake bucket), and
    its name is the namespace, so a stack deployed again after ``cdk destroy`` cannot create it: with
    ``create=False`` (context ``import_lake``) the stack uses the existing one by name instead.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, database_name: str, lake_bucket: s3.IBucket, create: bool = True
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.database_name = database_name
        self.database: glue.CfnDatabase | None = None
        if create:
            self.database = glue.CfnDatabase(
                self,
                "Database",
                catalog_id=stack.account,
                database_input=glue.CfnDatabase.DatabaseInputProperty(
                    name=database_name,
                    description="icegate: Iceberg tables loaded by the quality-gated ingestion pipeline",
                    # pyiceberg places a new table at <database location>/<table>, the only prefix the loader
                    # may write (without a location pyiceberg 0.12 would use <warehouse>/<namespace>/<table>,
                    # as the local SQL catalog does: the README names both).
                    location_uri=f"s3://{lake_bucket.bucket_name}/{WAREHOUSE_PREFIX}/{database_name}.db",
                ),
            )
            # Deleting the stack must not drop the catalog entries of tables that still hold data.
            self.database.apply_removal_policy(RemovalPolicy.RETAIN)
        self.catalog_arn = stack.format_arn(service="glue", resource="catalog")
        self.database_arn = stack.format_arn(service="glue", resource="database", resource_name=database_name)
        self.tables_arn = stack.format_arn(service="glue", resource="table", resource_name=f"{database_name}/*")
        #: The ingestion ledger, which every stage that records or consults outcomes touches (and nothing else).
        self.ledger_table_arn = stack.format_arn(
            service="glue", resource="table", resource_name=f"{database_name}/{LEDGER_TABLE}"
        )
        #: Where pyiceberg puts the ledger's files: <database location>/<table>.
        self.ledger_prefix = f"{WAREHOUSE_PREFIX}/{database_name}.db/{LEDGER_TABLE}"
