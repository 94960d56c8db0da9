"""Company finding and column pairing in the document rules, on made-up receipts."""

from __future__ import annotations

from decimal import Decimal

from tierflow.routing.document_fields import misread_words, without_registration
from tierflow.routing.documents import IssueCode, decide_document, extract_fields, validate

TAIL = "01/02/2020\nTOTAL 10.00\nCASH 10.00\n"


def _company(text: str) -> tuple[str | None, bool]:
    doc = extract_fields(text)
    return (doc.company.value if doc.company else None), doc.company_strong


def test_a_lone_heading_over_its_address_is_the_company() -> None:
    text = "SELERA PAGI\nNO 12, JALAN MAWAR 3\n43000 KAJANG\n" + TAIL
    assert _company(text) == ("SELERA PAGI", True)
    assert decide_document(extract_fields(text)).accept


def test_a_heading_loses_the_registration_number_printed_after_it() -> None:
    assert without_registration("KILAT JAYA (0012345-K)") == "KILAT JAYA"
    assert _company("KILAT JAYA (0012345-K)\nNO 3 JALAN C\n") == ("KILAT JAYA", True)


def test_two_name_lines_at_the_head_give_no_company() -> None:
    assert _company("SELERA PAGI\nKAMPUNG BARU\nNO 12, JALAN MAWAR 3\n") == (None, False)


def test_a_heading_repeated_at_greater_length_below_is_weak() -> None:
    text = "TAX INVOICE\nPIZZA RIA\nGST REG NO: 001122334455\nPIZZA RIA BANDAR BARU\nNO 1 JALAN D\n"
    assert _company(text) == ("PIZZA RIA", False)


def test_a_slip_kind_above_the_legal_name_is_not_part_of_it() -> None:
    assert _company("CASH SALE\nKILAT JAYA TRADING SDN BHD\nNO 3 JALAN C\n") == (
        "KILAT JAYA TRADING SDN BHD",
        True,
    )


def test_a_receipt_counter_before_the_legal_name_is_cut_and_does_not_weaken_it() -> None:
    assert _company("#000042 KILAT JAYA SDN BHD\nNO 3 JALAN C\n") == ("KILAT JAYA SDN BHD", True)


def test_an_owner_prefix_even_misread_keeps_the_company_weak() -> None:
    assert _company("KOPI DUA\nDWNER BY KILAT JAYA S/B\nNO 3 JALAN C\n")[1] is False


def test_a_legal_name_of_business_words_only_begins_on_the_line_above() -> None:
    assert _company("EMAS PERMATA\nRESTAURANT SDN BHD\nNO 3 JALAN C\n") == (
        "EMAS PERMATA RESTAURANT SDN BHD",
        True,
    )


def test_a_brand_above_its_legal_name_despite_punctuation_names_the_same_company() -> None:
    assert _company("JOE'S CORNER\nJOES CORNER SDN BHD\nNO 3 JALAN C\n") == ("JOES CORNER SDN BHD", True)


def test_a_person_above_a_legal_name_leaves_it_weak() -> None:
    assert _company("LIM AH KOW\nKILAT JAYA SDN BHD\nNO 3 JALAN C\n")[1] is False


def test_plurals_are_not_misreadings_but_one_letter_off_a_business_word_is() -> None:
    assert misread_words("SEGAR RESTAURANTS SDN BHD") == []
    assert misread_words("SEGAR RESTAVRANT SDN BHD") == ["RESTAVRANT"]


def test_counts_inside_a_label_column_do_not_shift_the_amounts() -> None:
    text = "KILAT JAYA SDN BHD\n01/02/2020\nITEM COUNT 2\nTOTAL\nCASH\nQTY : 3\nCHANGE\n9.00\n10.00\n1.00\n"
    doc = extract_fields(text)
    assert doc.total_amount == Decimal("9.00") and "cash minus change" in doc.total_support


def test_a_label_column_gets_its_amounts_printed_further_down() -> None:
    text = (
        "KILAT JAYA SDN BHD\n01/02/2020\nTOTAL SALES RM\nCASH RM\nCHANGE RM\nGST SUMMARY\n"
        "AMOUNT(RM)\n8.49\nTHANK YOU\n9.00\n20.00\n11.00\n"
    )
    doc = extract_fields(text)
    assert doc.total_amount == Decimal("9.00") and "cash minus change" in doc.total_support


def test_a_column_with_an_extra_amount_is_shifted_to_where_the_sums_agree() -> None:
    text = (
        "KILAT JAYA SDN BHD\n01/02/2020\nTOTAL ROUNDED\nCASH TENDERED\nCHANGE\nTOTAL\n"
        "4.50\n12.00\n20.00\n8.00\n"
    )
    doc = extract_fields(text)
    assert doc.total_amount == Decimal("12.00") and "cash minus change" in doc.total_support


def test_an_unpaired_column_whose_sums_never_agree_pairs_nothing() -> None:
    text = "KILAT JAYA SDN BHD\n01/02/2020\nTOTAL\nCASH\nCHANGE\n4.50\n12.00\n"
    assert IssueCode.MISSING in {i.code for i in validate(extract_fields(text))}


def test_cash_minus_change_pays_the_total_after_its_rounding() -> None:
    text = "KILAT JAYA SDN BHD\n01/02/2020\nTOTAL 12.37\nROUNDING -0.02\nCASH 20.00\nCHANGE 7.65\n"
    doc = extract_fields(text)
    assert doc.total_amount == Decimal("12.37") and "cash minus change, rounded" in doc.total_support


def test_a_total_that_includes_a_tax_is_not_a_final_total_conflicting_with_the_rounded_one() -> None:
    text = (
        "KILAT JAYA SDN BHD\n01/02/2020\nTOTAL ROUNDED 12.00\nCASH 20.00\nCHANGE 8.00\n"
        "TOTAL INCLUDES 6% GST 0.68\n"
    )
    doc = extract_fields(text)
    assert doc.total_amount == Decimal("12.00") and doc.conflicting_totals == ()


def test_a_card_expiry_and_a_print_stamp_are_not_the_documents_date() -> None:
    text = "KILAT JAYA SDN BHD\n27/02/18 21:22\nCARD EXPIRY : 31/05/18\nPRINTED ON: 27-02-2018 21:30\n"
    doc = extract_fields(text)
    assert doc.date is not None and doc.date.value == "27/02/18"
    assert doc.other_dates == () and doc.date_forms == ("27/02/18",)


def test_a_currency_glued_to_the_total_leaves_its_printed_form_uncertain() -> None:
    text = "KILAT JAYA SDN BHD\n01/02/2020\nTOTAL\nRM10.00\nCASH\nRM10.00\n"
    doc = extract_fields(text)
    assert doc.total is not None and doc.total.value == "RM10.00"
    assert IssueCode.TOTAL_FORM_AMBIGUOUS in {i.code for i in validate(doc)}
