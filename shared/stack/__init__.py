"""The local stack: a Tansu broker and a private Redis on free loopback ports."""

from shared.stack.local_stack import LocalStack, StackError

__all__ = ["LocalStack", "StackError"]
