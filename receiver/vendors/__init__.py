"""The vendors the receiver understands: one module each, one line each in ``VENDORS``.

A new vendor is one module (its options, payload models and ``JsonVendor`` subclass,
see ``vendors.base``) and one line here. The kinds a source may name, the settings of
each kind, the schemas and the OpenAPI document all derive from this registry.
"""

from __future__ import annotations

from receiver.vendors.base import JsonVendor, Vendor
from receiver.vendors.generic import Generic
from receiver.vendors.iotcomms import Iotcomms
from receiver.vendors.sigfox import Sigfox
from receiver.vendors.soracom import Soracom
from receiver.vendors.tracker import Tracker

VENDORS: dict[str, type[JsonVendor]] = {vendor.kind: vendor for vendor in (Iotcomms, Tracker, Sigfox, Soracom, Generic)}

__all__ = ["VENDORS", "JsonVendor", "Vendor"]
