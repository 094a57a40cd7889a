"""Schema evolution: fit the contract's columns onto the table's fields, and evolve the table safely.

Other tools change tables (add, rename or drop columns), and contracts gain columns. Before it
plans, a load maps each column the contract writes (its own and the lineage columns) onto a
field of the table's current schema, as Iceberg resolves columns:

- by name, when the table has a field of that name;
- else by field id, when an earlier schema had a field of that name that is still in the table
  under another name (renamed by another tool);
- else the column is new to the table (the contract gained it, or another tool dropped it) and
  is added, optional, with a new field id.

A table made by another tool is also given what a load needs to be safe: ``commit.retry.num-retries=0``
(pyiceberg would otherwise re-apply a commit that lost a race without checking its keys again) and the
merge key it is loaded on (``icegate.merge-key``, which rollback reads).

A field's type may be widened where Iceberg allows it without rewriting data (int → long,
float → double). Anything else — a narrower or different type, a key column that is missing,
renamed or retyped, a contract keyed differently from the table, a required field the contract
does not fill — is an :class:`UnsafeSchemaChange` naming the column. Table fields the contract
lacks are written as nulls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyiceberg.types import DoubleType, FloatType, IcebergType, IntegerType, LongType, NestedField

from icegate.errors import UnsafeSchemaChange
from icegate.lake.catalog import COMMIT_RETRIES_PROPERTY, MERGE_KEY_PROPERTY, TABLE_PROPERTIES, iceberg_schema

if TYPE_CHECKING:
    from pyiceberg.schema import Schema
    from pyiceberg.table import Table

    from icegate.datasets import Dataset

#: Type changes that Iceberg applies to existing data files without rewriting them.
_WIDENINGS: frozenset[tuple[type[IcebergType], type[IcebergType]]] = frozenset(
    {(IntegerType, LongType), (FloatType, DoubleType)}
)


@dataclass(frozen=True)
class SchemaFit:
    """How the contract's columns land in the table's current schema."""

    #: Contract column → the table field that holds it (a different name where another tool renamed it).
    names: dict[str, str]
    #: Contract columns the table lacks, with their types: added before the load writes.
    added: tuple[tuple[str, IcebergType], ...] = ()
    #: Table fields whose type is widened to the contract's.
    widened: tuple[tuple[str, IcebergType], ...] = ()

    @property
    def renames(self) -> dict[str, str]:
        return {column: name for column, name in self.names.items() if column != name}

    @property
    def evolves(self) -> bool:
        return bool(self.added or self.widened)


def fit_schema(table: Table, dataset: Dataset, *, file: str | None = None) -> SchemaFit:
    """Map the contract onto the table's current schema, or raise :class:`UnsafeSchemaChange`."""
    current = table.schema()
    history = sorted(table.metadata.schemas, key=lambda schema: schema.schema_id, reverse=True)
    table_key = table.properties.get(MERGE_KEY_PROPERTY)
    if table_key is not None and tuple(table_key.split(",")) != dataset.key:
        raise UnsafeSchemaChange(
            f"the table {dataset.table!r} is merged on ({table_key.replace(',', ', ')}) but the contract's key is "
            f"({', '.join(dataset.key)}); a changed key needs a new table",
            file=file,
        )
    names: dict[str, str] = {}
    added: list[tuple[str, IcebergType]] = []
    widened: list[tuple[str, IcebergType]] = []
    claimed: dict[int, str] = {}
    for wanted in iceberg_schema(dataset).fields:
        column = wanted.name
        field = _field_for(column, current, history)
        if column in dataset.key:
            _check_key_column(column, field, wanted.field_type, file)
        if field is None:
            added.append((column, wanted.field_type))
            names[column] = column
            continue
        if (other := claimed.get(field.field_id)) is not None:
            raise UnsafeSchemaChange(
                f"the contract's columns {other!r} and {column!r} both map to the table's column {field.name!r} "
                "(renamed by another tool); rename one of them in the contract or the table",
                file=file,
                location=f"column {column!r}",
            )
        claimed[field.field_id] = column
        names[column] = field.name
        if field.field_type != wanted.field_type:
            if (type(field.field_type), type(wanted.field_type)) not in _WIDENINGS:
                raise UnsafeSchemaChange(
                    f"the table stores column {field.name!r} as {field.field_type} but the contract declares "
                    f"{wanted.field_type} for {column!r}; only int → long and float → double widen safely",
                    file=file,
                    location=f"column {column!r}",
                )
            widened.append((field.name, wanted.field_type))
    unfilled = [f.name for f in current.fields if f.required and f.field_id not in claimed]
    if unfilled:
        raise UnsafeSchemaChange(
            f"the table requires the columns {unfilled}, which the contract does not provide",
            file=file,
            location=f"column {unfilled[0]!r}",
        )
    return SchemaFit(names, tuple(added), tuple(widened))


def evolve_table(table: Table, dataset: Dataset, *, file: str | None = None) -> tuple[Table, SchemaFit]:
    """The table with the contract's new columns added, its widened types applied and the properties a load
    needs set (on a table made by another tool), and the fit.

    The change commits on its own, asserting the schema it was made against: a concurrent schema
    change makes it fail with ``CommitFailedException``, and the load's loop reloads and re-fits.
    A schema change without the load that asked for it is harmless (optional columns, wider
    types), so a load that then fails leaves no visible partial data.
    """
    fit = fit_schema(table, dataset, file=file)
    adopted = _properties_to_adopt(table, dataset)
    if not fit.evolves and not adopted:
        return table, fit
    with table.transaction() as transaction:
        if adopted:
            transaction.set_properties(adopted)
        if fit.evolves:
            with transaction.update_schema() as update:
                for name, field_type in fit.added:
                    update.add_column(name, field_type)
                for name, field_type in fit.widened:
                    update.update_column(name, field_type=field_type)
    return table, fit_schema(table, dataset, file=file)


def _properties_to_adopt(table: Table, dataset: Dataset) -> dict[str, str]:
    """What a table made by another tool lacks for a load to be safe (none for a table icegate made)."""
    wanted = {COMMIT_RETRIES_PROPERTY: TABLE_PROPERTIES[COMMIT_RETRIES_PROPERTY]}
    if MERGE_KEY_PROPERTY not in table.properties:
        wanted[MERGE_KEY_PROPERTY] = ",".join(dataset.key)
    return {name: value for name, value in wanted.items() if table.properties.get(name) != value}


def _field_for(column: str, current: Schema, history: list[Schema]) -> NestedField | None:
    """The current field that holds ``column``: by name, else by the id it had in an earlier schema."""
    current_by_id = {field.field_id: field for field in current.fields}
    if (by_name := next((f for f in current.fields if f.name == column), None)) is not None:
        return by_name
    for schema in history:
        if (earlier := next((f for f in schema.fields if f.name == column), None)) is not None:
            return current_by_id.get(earlier.field_id)
    return None


def _check_key_column(column: str, field: NestedField | None, wanted: IcebergType, file: str | None) -> None:
    """Key columns are matched by name with the same type: stored rows must stay comparable."""
    if field is None or field.name != column:
        state = "dropped" if field is None else f"renamed to {field.name!r}"
        raise UnsafeSchemaChange(
            f"the key column {column!r} was {state} in the table; the merge cannot find stored keys",
            file=file,
            location=f"column {column!r}",
        )
    if field.field_type != wanted:
        raise UnsafeSchemaChange(
            f"the key column {column!r} is {field.field_type} in the table but {wanted} in the contract",
            file=file,
            location=f"column {column!r}",
        )
