"""Unit tests (no MPI) of the transport's pure functions."""
from hypothesis import given, settings
from hypothesis import strategies as st

from mpi_gan.comm.transport import pieces


@given(nbytes=st.integers(0, 10**6), limit=st.integers(1000, 5000) | st.integers(1, 40))
@settings(max_examples=200, deadline=None)
def test_pieces_cover_the_message_and_mark_its_end(nbytes, limit):
    nbytes = nbytes if limit >= 1000 else nbytes % 1000
    parts = pieces(nbytes, limit)
    assert sum(length for _, length in parts) == nbytes
    assert [offset for offset, _ in parts] == [i * limit for i in range(len(parts))]
    # every piece but the last is exactly the limit, the last is shorter: a receiver that
    # does not know the size stops at the first piece below the limit
    assert all(length == limit for _, length in parts[:-1]) and parts[-1][1] < limit
    assert (len(parts) == 1) == (nbytes < limit)
