"""CiliumNetworkPolicy building, CRD validation, simulation against flows, apply/rollback."""
