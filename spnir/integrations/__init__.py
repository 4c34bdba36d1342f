"""Adapters that put SPN into other training frameworks (imported only when used; none is a dependency)."""
