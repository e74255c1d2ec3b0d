"""Validates an OpenRPC document against the OpenRPC meta-schema, offline.

Usage: python validate.py DOCUMENT.json
The meta-schemas beside this file are copies of the npm packages
@open-rpc/meta-schema 1.14.9 (its `openrpcDocument`) and
@json-schema-tools/meta-schema 1.8.0 (`schema.json`, which the first one
refers to by its $id), both Apache-2.0. Needs the `jsonschema` package."""
import json
import sys
from pathlib import Path

import jsonschema
from referencing import Registry
from referencing.jsonschema import DRAFT7

here = Path(__file__).parent
meta_schema = json.loads((here / "openrpc-meta-schema.json").read_text())
json_schema = json.loads((here / "json-schema-tools-meta-schema.json").read_text())
registry = Registry().with_resource(json_schema["$id"].rstrip("/"), DRAFT7.create_resource(json_schema))
document = json.loads(Path(sys.argv[1]).read_text())
jsonschema.Draft7Validator(meta_schema, registry=registry).validate(document)
print(f"{sys.argv[1]}: a valid OpenRPC {document['openrpc']} document with {len(document['methods'])} methods")
