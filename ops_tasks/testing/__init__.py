"""Test helpers shipped with the package, as fabric.testing is: sshd pods and stand-ins."""
