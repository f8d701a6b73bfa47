"""MappedTrace's compiler-generated maps, decoded from DWARF with pyelftools: read-only maps of
where pointers live, usable without a debugger.

- type map (typemap.py): every type's size and pointer slots as common.target.TypeLayout,
  keyed "dwarf:<file id>:<DIE offset>" (PtrSlot.target_type holds such keys);
- global map (globals.py): static-storage variables at link-time addresses, thread-locals with
  their TLS offsets;
- location map (locations.py + exprs.py): per function and pc, the parameters and locals with
  their DWARF locations, evaluated from registers, the CFA and memory;
- program view (program.py): all loaded objects relocated by their load bias, producing
  common.target.Variable objects, and the type resolver;
- cache (cache.py): decoded once per build-id, stored as .npz under ~/.cache/heaplens/maps.

Entry points:
    ProgramMaps.load(objfiles) -> ProgramMaps
    load_file_maps(path, build_id=None) -> FileMaps
"""
from .files import FileMaps, find_debug_file, load_file_maps
from .program import PhysFrame, ProgramMaps, ThreadLocal

__all__ = ["FileMaps", "ProgramMaps", "PhysFrame", "ThreadLocal", "find_debug_file", "load_file_maps"]
